"""Every command in the README's ```bash blocks runs, at 2 steps on the tiny synthetic preset.

Each ``evcmae-*`` command of a block (every ``&&`` part of a line; comments dropped) runs as a user
runs it, as the installed console script in a fresh working folder, with two changes: the README's
placeholders (``outputs/runs/<time>``, ``<raw_dir>``, ...) become artefacts this module makes once,
and the tool's ``TOOLS`` arguments are appended, which make it train 2 steps on tiny data (Hydra and
argparse both let the last value win). Its output must then show what the tool does.

Adding an example to the README needs no change here unless it uses a new tool or placeholder, and
then the test fails saying which line to add (``TOOLS``, ``PLACEHOLDERS``, ``SPECIAL``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

HYDRA_TINY = ["data=tiny", "paths.data_dir={data}", "trainer.max_steps=2", "trainer.log_every_n_steps=1"]
# tool -> (arguments appended to make it tiny, what its output must show, a file it must leave in
# its working folder or None)
TOOLS = {
    "evcmae-pretrain": (
        [*HYDRA_TINY, "data.val_max_windows=4", "callbacks.checkpoint.every_n_train_steps=2"],
        r"evcmae: 2 steps in",
        "outputs/**/csv/version_0/curves.png",
    ),
    # chunks of 2 windows; no validation during fit, the best (last) checkpoint's once after it
    "evcmae-finetune": (
        [*HYDRA_TINY, "data.seq_len=2"],
        r"evcmae: 2 steps in .* record ",
        "outputs/**/csv/version_0/curves.png",
    ),
    "evcmae-demo": (
        ["preset=tiny", "pretrain_steps=2", "finetune_steps=2", "data_dir={data}", "finetune.data.seq_len=2"],
        r"evcmae-demo: pretrain_s \d+, finetune_s \d+, evaluate_s \d+",
        "outputs/demo/eval_test/metrics.json",
    ),
    "evcmae-evaluate": ([], r"(?s)AP_class_agnostic\s+\S+.*evcmae: metrics written to ", None),
    "evcmae-detect": ([], r"detections over 20 windows", "raw/test/*_detections_bbox.npy"),
    "evcmae-compare": ([], r"\| a \| 10\.00 \(-5\.00\) \|", None),  # AP of the records made below
    "evcmae-sweep-summary": ([], r"2 runs; wrote ", None),
    "evcmae-viz": ([], r"evcmae-viz: wrote ", None),
    "evcmae-info": ([], r"events\s+84,060", None),
    "evcmae-synth": (["--out", "synth", "--preset", "tiny"], r"6 recordings", "synth/synth.json"),
    "evcmae-preprocess": ([], r"test: 1 sequences, \d+ representations|3 recordings converted to HDF5", None),
    "evcmae-convert-rvt": ([], r"loaded 376 of 376 tensors", None),
    "evcmae-probe": (["--max-windows", "8"], r"(?s)pretrained .*untrained .*raw_features\s+balanced accuracy", None),
    "evcmae-export": ([], r"graph of one window -> (?s:.*)max \|exported - PyTorch\|", None),
}
# README placeholder -> artefact (keys of the `artefacts` fixture); the longest match is replaced first
PLACEHOLDERS = {
    "outputs/runs/<time>": "pretrain_run",
    "outputs/multiruns/<time>": "sweep",
    "outputs/finetune/<time>": "finetune_run",
    "outputs/experiments/<a>": "experiment_a",
    "outputs/experiments/<b>": "experiment_b",
    "outputs/experiments/<base>": "experiment_base",
    "<raw_dir>": "raw_dir",  # a copy of the tiny preset's raw recordings, one per example
    "<rvt_dir>": "rvt_dir",
    "<name>": "name",
    "data/demo": "raw_dir",  # the demo preset's folder, as evcmae-demo leaves it: the tiny preset here
    # Coming from RVT and the public datasets: an RVT-named checkpoint (gen4's 3 classes), its
    # conversion, and one tiny recording per split in each dataset's own layout (dataset_fixtures)
    "<rvt.ckpt>": "rvt_ckpt",
    "<rvt_evcmae.ckpt>": "rvt_evcmae",
    "<gen1_h5>": "gen1_h5",
    "<gen1>": "gen1",
    "<gen4>": "gen4",
    "<etram>": "etram",
}
# An example that names its own dataset (data=gen1, ...) keeps it: the tiny preset's arguments give
# way to these, which keep the run small on that dataset.
OWN_DATA = ["trainer.max_steps=2", "trainer.log_every_n_steps=1", "data.batch_size=2", "data.num_workers=0"]
# Examples (as the README writes them) that need more, or show more, than their tool's entry says:
# example -> (more arguments, what the output must show as well, the file to look for instead)
SPECIAL = {
    # DDP on this machine's CPU: two processes, not the four GPUs the example asks for
    "evcmae-pretrain trainer=ddp trainer.devices=4": (["trainer.accelerator=cpu", "trainer.devices=2"], None, ...),
    "evcmae-pretrain data=tiny trainer.max_steps=200 logger=tensorboard": (
        [],
        None,
        "outputs/runs/*/tensorboard/version_0/events.out.tfevents.*",
    ),
    # resumes the pretraining artefact in its own folder
    "evcmae-pretrain ckpt_path=last hydra.run.dir=outputs/runs/<time>": (
        [],
        r"Restoring states from the checkpoint path at .*last\.ckpt",
        None,
    ),
    "evcmae-finetune model.pretrained=outputs/runs/<time>": ([], r"\(teacher\): loaded 90 of 90 tensors", ...),
    "evcmae-finetune model.pretrained=outputs/runs/<time>/checkpoints/last.ckpt model.pretrained_which=student "
    "model.encoder_mode=freeze": ([], r"last\.ckpt \(student\): loaded 90 of 90 tensors", ...),
}
# No scheduler here: such an example is composed for each of its sweep points, not launched.
COMPOSE_ONLY = ("hydra/launcher=slurm_gpu",)


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            parts = [[]]
            for token in tokens:
                parts.append([]) if token == "&&" else parts[-1].append(token)
            examples += [" ".join(p) for p in parts if p and p[0].startswith("evcmae-")]
    return examples


EXAMPLES = readme_examples()


def test_the_readme_has_examples_of_every_stage():
    tools = {shlex.split(e)[0] for e in EXAMPLES}
    assert {"evcmae-demo", "evcmae-pretrain", "evcmae-finetune", "evcmae-evaluate", "evcmae-detect"} <= tools
    stale = [e for e in (*SPECIAL, *COMPOSE_ONLY) if not any(e in example for example in EXAMPLES)]
    assert not stale, f"SPECIAL/COMPOSE_ONLY name examples the README no longer has: {stale}"


def _substitute(example: str, artefacts: dict) -> list[str]:
    args = shlex.split(example)
    tool = args[0]
    assert tool in TOOLS, f"README example uses {tool}: add how it runs tiny to TOOLS in {__file__}"
    out = []
    for arg in args:
        for placeholder in sorted(PLACEHOLDERS, key=len, reverse=True):
            arg = arg.replace(placeholder, str(artefacts[PLACEHOLDERS[placeholder]]))
        unknown = re.findall(r"<[^<>\s]+>|\.\.\.", arg)
        assert not unknown, f"README example {example!r}: unknown placeholder {unknown}: add it to PLACEHOLDERS"
        out.append(arg)
    extra = TOOLS[tool][0] + SPECIAL.get(example, ([],))[0]
    if any(a.startswith("data=") and a != "data=tiny" for a in args[1:]):
        extra = [*OWN_DATA, *(["data.seq_len=2"] if tool == "evcmae-finetune" else [])]
    return out + [a.format(data=artefacts["data"]) for a in extra]


def _console_script(tool: str) -> str:
    """The script of this environment (beside its python), else the one on PATH."""
    beside = Path(sys.executable).parent / tool
    found = str(beside) if beside.exists() else shutil.which(tool)
    assert found, f"{tool} is not installed (pip install -e .)"
    return found


def _compose_sweep(args: list[str]):
    """Each sweep point's full config (Hydra's own sweep expansion), as the launcher would get it."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher  # noqa: F401 (.[slurm])

    from evcmae.tools.pretrain import config_dir

    app = args[0].removeprefix("evcmae-")
    overrides = [a for a in args[1:] if a != "-m"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    points = [p for batch in BasicSweeper.split_arguments(parsed, None) for p in batch]
    configs = []
    for point in points:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(app), version_base="1.3"):
            configs.append(compose(app, overrides=list(point), return_hydra_config=True))
    return configs


def _dataset_artefacts(base: Path) -> dict:
    """Tiny Gen1 (DAT), 1 Mpx and eTraM datasets in their own layouts, Gen1's HDF5 copy, an RVT
    checkpoint with RVT's tensor names (random weights, RVT-tiny, 3 classes) and its conversion."""
    import torch
    from dataset_fixtures import write_dataset

    from evcmae.events.convert import convert_dataset
    from evcmae.finetune.encoder import EventDetector
    from evcmae.finetune.rvt_checkpoint import convert, rvt_name

    out = {name: write_dataset(base / name, name) for name in ("gen1", "gen4", "etram")}
    out["gen1_h5"] = base / "gen1_h5"
    convert_dataset(out["gen1"], out["gen1_h5"], width=304, height=240)
    torch.manual_seed(0)
    model = EventDetector("histogram", "tiny", 3, 360, 640)
    out["rvt_ckpt"] = base / "rvt.ckpt"
    torch.save({"state_dict": {f"mdl.{rvt_name(k)}": v for k, v in model.state_dict().items()}}, out["rvt_ckpt"])
    out["rvt_evcmae"] = base / "rvt_evcmae.ckpt"
    convert(out["rvt_ckpt"], out["rvt_evcmae"], dataset="gen4")
    return out


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, synth_tiny):
    """What the placeholders stand for: a pretraining run (2 steps), a sweep folder of two runs,
    a fine-tuning run from that pretraining (2 steps, its best checkpoint validated), experiment
    records, and the tiny preset's raw recordings."""
    from evcmae.tools.demo import _compose
    from evcmae.tools.finetune import train
    from evcmae.tools.pretrain import run

    base = tmp_path_factory.mktemp("readme")
    data = base / "data"
    data.mkdir()
    (data / "tiny").symlink_to(synth_tiny, target_is_directory=True)
    raw = base / "raw"
    shutil.copytree(synth_tiny, raw)
    quiet = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "+trainer.enable_model_summary=false"]
    tiny = [a.format(data=data) for a in TOOLS["evcmae-pretrain"][0]]
    pretrain_run = base / "outputs" / "runs" / "2025-01-01_00-00-00"
    run(_compose("pretrain", [*tiny, *quiet, f"paths.log_dir={base / 'outputs'}"], pretrain_run))
    finetune_run = base / "outputs" / "finetune" / "2025-01-01_00-00-00"
    tiny = [a.format(data=data) for a in TOOLS["evcmae-finetune"][0]]
    result = train(
        _compose(
            "finetune",
            [*tiny, *quiet, f"model.pretrained={pretrain_run}", f"paths.log_dir={base / 'outputs'}"],
            finetune_run,
        )
    )
    experiments = base / "outputs" / "experiments"
    for name, ap in (("a", 0.1), ("b", 0.2), ("base", 0.15)):
        shutil.copytree(result["record"], experiments / name)
        metrics = json.loads((experiments / name / "metrics.json").read_text())
        (experiments / name / "metrics.json").write_text(json.dumps({**metrics, "AP": ap}))
    sweep = base / "outputs" / "multiruns" / "2025-01-01_00-00-00"
    for job, weight in enumerate(("0", "0.6")):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(f"- loss.weights.voxel_nce={weight}\n")
        shutil.copy(pretrain_run / "final_metrics.json", sweep / str(job))
    datasets = _dataset_artefacts(base)
    return {
        **datasets,
        "data": data,
        "raw_dir": raw,
        "rvt_dir": "rvt",  # relative: a fresh folder in each example's working folder
        "name": sorted((raw / "test").glob("*_td.h5"))[0].name.removesuffix("_td.h5"),
        "pretrain_run": pretrain_run,
        "sweep": sweep,
        "finetune_run": finetune_run,
        "experiment_a": experiments / "a",
        "experiment_b": experiments / "b",
        "experiment_base": experiments / "base",
    }


@pytest.mark.parametrize("example", EXAMPLES)
def test_readme_example_runs(example, artefacts, tmp_path):
    if any(p in example for p, name in PLACEHOLDERS.items() if name == "raw_dir"):
        # Its own copy: an example that writes beside the recordings must not change another's input.
        artefacts = {**artefacts, "raw_dir": shutil.copytree(artefacts["raw_dir"], tmp_path / "raw")}
    args = _substitute(example, artefacts)
    if any(piece in example for piece in COMPOSE_ONLY):
        configs = _compose_sweep(args)
        assert len(configs) == example.count(",") + 1
        for cfg in configs:
            launcher = cfg.hydra.launcher
            assert launcher._target_.endswith("SlurmLauncher")
            assert launcher.nodes == cfg.trainer.num_nodes and isinstance(launcher.gpus_per_node, int)
        return
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [_console_script(args[0]), *args[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{shlex.join(args)}\nexit {proc.returncode}\n{output[-4000:]}"
    _, shows, leaves = TOOLS[args[0]]
    _, also_shows, instead = SPECIAL.get(example, ([], None, ...))
    for pattern in (shows, also_shows):
        assert pattern is None or re.search(pattern, output), f"{shlex.join(args)}: no {pattern!r} in\n{output[-3000:]}"
    leaves = leaves if instead is ... else instead
    assert leaves is None or any(tmp_path.glob(leaves)), f"{shlex.join(args)}: left no {leaves} in its folder"
