"""Pretraining configs composed the way ``evcmae-pretrain`` composes them, for tests on the tiny
synthetic preset (tests/conftest.py: ``synth_tiny``)."""

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from evcmae.tools.pretrain import config_dir

# A fit that only trains: one thread, no progress bar, no validation, no final probe.
QUIET_FIT = (
    "torch_threads=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "trainer.limit_val_batches=0",
    "final_validation=false",
)


def tiny_pretrain_config(root, out, *overrides):
    """The pretraining config on the tiny preset under ``root``, every output under ``out``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("pretrain"), version_base="1.3"):
        return compose(
            "pretrain",
            overrides=[
                f"paths.root_dir={out}",
                f"paths.output_dir={out}",
                "data=tiny",
                f"data.root={root}",
                *overrides,
            ],
        )
