"""DDP with one process: evcmae-pretrain trainer=ddp on one GPU initialises NCCL, trains and
writes finite final metrics (on the CPU the same run goes through gloo)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys


def test_ddp_one_process(synth_tiny, tmp_path, device, accelerator):
    backend = "nccl" if device == "cuda" else "gloo"
    steps = 3 if device == "cuda" else 1  # a CPU step takes ~10 s on the 2-core machine
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "evcmae.tools.pretrain",
        "data=tiny",
        f"data.root={synth_tiny}",
        "trainer=ddp",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        f"trainer.strategy.process_group_backend={backend}",
        "trainer.precision=16-mixed" if device == "cuda" else "trainer.precision=32-true",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "trainer.limit_val_batches=0",
        "final_validation=false",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert f"distributed_backend={backend}" in log, log[-4000:]
    assert "Starting with 1 processes" in log
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["global_step"] == steps
    losses = {k: v for k, v in metrics.items() if k.startswith("train/") and isinstance(v, float)}
    assert "train/total" in losses and all(math.isfinite(v) for v in losses.values()), losses
