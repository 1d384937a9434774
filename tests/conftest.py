import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real sensor recordings live beside the checkout, never inside it (see shared/data/README.md).
SHARED_DATA = Path(os.environ.get("EVCMAE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (set EVCMAE_SHARED_DATA)")
    return SHARED_DATA


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run in CI all the same")


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """The `tiny` synthetic preset (seed 0), generated once per test session."""
    from evcmae.events.synth import generate

    root = tmp_path_factory.getbasetemp() / "synth_tiny"
    if not (root / "synth.json").exists():
        generate(root, "tiny", 0)
    return root
