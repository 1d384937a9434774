"""The public datasets' configs: each needs data.root and says so, and each states its dataset's
facts (sensor, resolution, classes, class map)."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from evcmae.finetune.classes import CLASS_SETS, ETRAM8_TO_3, class_names
from evcmae.tools.pretrain import config_dir

FINETUNE = ("gen1", "gen4", "etram", "etram3")
PRETRAIN = ("gen1", "gen4", "etram")


def data_config(app, dataset, *overrides):
    with initialize_config_dir(config_dir=config_dir(app), version_base="1.3"):
        return compose(config_name=app, overrides=[f"data={dataset}", *overrides]).data


@pytest.mark.parametrize("app, dataset", [("finetune", d) for d in FINETUNE] + [("pretrain", d) for d in PRETRAIN])
def test_missing_root_is_named_with_the_dataset(app, dataset):
    data = data_config(app, dataset)
    with pytest.raises(InterpolationResolutionError, match=f"data={dataset} needs data.root: add data.root="):
        OmegaConf.to_container(data, resolve=True)
    given = OmegaConf.to_container(data_config(app, dataset, "data.root=/data/x"), resolve=True)
    assert given["root"] == "/data/x" and given.get("synth_preset") is None  # never a synthetic fallback


def test_finetune_data_module_refuses_an_unset_root():
    from evcmae.finetune.data import FinetuneDataModule

    with pytest.raises(ValueError, match=r"data.root is not set"):
        FinetuneDataModule(root=None)


@pytest.mark.parametrize(
    "dataset, sensor, downsample, classes",
    [("gen1", (304, 240), 1, "gen1"), ("gen4", (1280, 720), 2, "gen4"), ("etram", (1280, 720), 2, "etram8")],
)
def test_dataset_facts(dataset, sensor, downsample, classes):
    data = data_config("finetune", dataset, "data.root=/x")
    assert (data.width, data.height, data.downsample) == (*sensor, downsample)
    assert class_names(data.classes) == CLASS_SETS[classes]
    assert (data.eval.min_box_diag, data.eval.min_box_side) == (30.0, 10.0)  # Gen1 native / Gen4 at half
    pre = data_config("pretrain", dataset, "data.root=/x")
    assert (pre.width, pre.height, pre.downsample) == (*sensor, downsample)


def test_etram3_maps_the_eight_classes_to_three():
    data = data_config("finetune", "etram3", "data.root=/x")
    assert data.classes == "etram3" and len(class_names(data.classes)) == 3
    assert tuple(data.class_map) == ETRAM8_TO_3
    assert data.width == 1280 and data.downsample == 2  # the rest is eTraM's
