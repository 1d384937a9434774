"""The GPU checks (issue 12): spconv on CUDA against the CPU reference, mixed-precision fits,
faiss, DDP over NCCL. They run where CUDA is available and are skipped, with one reason, elsewhere.

``EVCMAE_GPU_TESTS_DEVICE=cpu`` runs them on the CPU instead (``tools/gpu_check.sh --dry-run``
does, so the checks themselves are exercised in CI): 16-mixed then becomes Lightning's CPU
bf16-mixed, NCCL becomes gloo, and the float16-only cases are left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
SKIP_REASON = (
    "no CUDA device: these are the GPU checks (tools/gpu_check.sh runs them on a GPU machine; "
    "EVCMAE_GPU_TESTS_DEVICE=cpu runs them on the CPU)"
)


def gpu_test_device() -> str | None:
    """'cuda', the forced device, or None (skip)."""
    forced = os.environ.get("EVCMAE_GPU_TESTS_DEVICE")
    if forced:
        if forced not in ("cpu", "cuda"):
            raise pytest.UsageError(f"EVCMAE_GPU_TESTS_DEVICE must be cpu or cuda, not {forced!r}")
        return forced
    return "cuda" if torch.cuda.is_available() else None


def pytest_collection_modifyitems(config, items):
    if gpu_test_device() is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> str:
    found = gpu_test_device()
    if found is None:  # only reached if the collection hook was bypassed
        pytest.skip(SKIP_REASON)
    if found == "cuda" and not torch.cuda.is_available():
        pytest.fail("EVCMAE_GPU_TESTS_DEVICE=cuda but torch sees no CUDA device")
    return found


@pytest.fixture(scope="session")
def accelerator(device) -> str:
    """Lightning's name for the device."""
    return "gpu" if device == "cuda" else "cpu"
