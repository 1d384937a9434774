"""The evcmae-pretrain command as users run it: 2-process DDP on the CPU (gloo), a 3-run sweep
through the submitit local launcher, and evcmae-sweep-summary over it.

The commands run as modules of the installed package (``python -m evcmae.tools.pretrain``), the way
their console scripts do."""

import os
import subprocess
import sys

import pytest
import torch

PRETRAIN, SUMMARY = ["-m", "evcmae.tools.pretrain"], ["-m", "evcmae.tools.sweep_summary"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(synth_tiny):
    return synth_tiny


def quick(tiny):
    return [
        "data=tiny",
        f"data.root={tiny}",
        "torch_threads=1",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "data.val_max_windows=8",
        "trainer.log_every_n_steps=1",
    ]


def run(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_ddp_two_cpu_processes_keep_teacher_and_queue_identical(tiny, tmp_path):
    steps = 3
    out = run(
        [
            *PRETRAIN,
            *quick(tiny),
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"trainer.max_steps={steps}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.rank_state._target_=evcmae.pretrain.callbacks.RankStateDump",
            f"+callbacks.rank_state.dirpath={tmp_path / 'ranks'}",
        ],
        cwd=tmp_path,
    )
    assert "pretrained backbone" in out
    r0, r1 = (torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] == steps
    assert r0["teacher"].keys() == r1["teacher"].keys()
    for k in r0["teacher"]:
        assert torch.equal(r0["teacher"][k], r1["teacher"][k]), k
    for k in r0["queue"]:
        assert torch.equal(r0["queue"][k], r1["queue"][k]), k
    assert r0["objectives"].keys() == r1["objectives"].keys()
    for k in r0["objectives"]:  # decoders, heads and their EMA twins
        assert torch.equal(r0["objectives"][k], r1["objectives"][k]), k
    # Both ranks' keys went into both queues: steps x batch 2 x 2 ranks.
    assert int(r0["queue"]["ptr"]) == steps * 2 * 2
    assert (tmp_path / "run" / "teacher_backbone.pt").exists()


def test_sweep_one_folder_per_run_and_summary(tiny, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs hydra-submitit-launcher (.[dev])")
    sweep = tmp_path / "sweep"
    run(
        [
            *PRETRAIN,
            "-m",
            "hydra/launcher=submitit_local",
            "loss.weights.voxel_nce=0,0.3,0.6",
            *quick(tiny),
            "trainer.max_steps=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    runs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert runs == ["0", "1", "2"]
    for r in runs:
        assert (sweep / r / "final_metrics.json").exists() and (sweep / r / "teacher_backbone.pt").exists()
    out = run([*SUMMARY, sweep], cwd=tmp_path, timeout=120)
    table = (sweep / "summary.md").read_text()
    assert table in out + "\n"
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| run | loss.weights.voxel_nce | probe/knn_acc")
    assert [row.split(" | ")[1] for row in rows[1:]] == ["0", "0.3", "0.6"]
    assert " – " in rows[1]  # voxel_nce was not computed in the λ = 0 run
    assert (sweep / "summary.csv").read_text().count("\n") == 4
    assert (sweep / "summary.png").stat().st_size > 1000
