"""evcmae: self-supervised pretraining for event cameras (EMA teacher, masked student, sparse
voxel backbone) and fine-tuning into the RVT/YOLOX detector."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

# One installed namespace, the checkout's folders unchanged: each top-level folder is installed as a
# subpackage of ``evcmae`` (events/ -> evcmae.events, tools/ -> evcmae.tools, ...), so no common
# name such as ``events`` or ``tools`` is claimed at the top level. evcmae/ holds only the public API.
TOP_FOLDERS = ["events", "pretrain", "finetune", "losses", "backbones", "tools", "conf"]


def _packages_under(top: str) -> list[str]:
    """Every folder under ``top`` that holds an __init__.py, dotted. Found on disk rather than listed,
    because a listed one was missed once (pretrain/objectives): an editable install imported it, a
    built wheel did not."""
    found = (init.parent.relative_to(HERE) for init in (HERE / top).rglob("__init__.py"))
    return sorted(".".join(folder.parts) for folder in found if "__pycache__" not in folder.parts)


FOLDERS = [name for top in TOP_FOLDERS for name in _packages_under(top)]
PACKAGES = ["evcmae"] + [f"evcmae.{name}" for name in FOLDERS]
PACKAGE_DIR = {"evcmae": "evcmae", **{f"evcmae.{name}": name.replace(".", "/") for name in FOLDERS}}

SPCONV_CPU = "spconv>=2.3.6,<2.4"
EXTRAS = {
    "cpu": [SPCONV_CPU, "faiss-cpu>=1.7", "faster-coco-eval>=1.6"],
    "cu120": ["spconv-cu120==2.3.6", "faiss-gpu-cu12"],
    "cu126": ["spconv-cu126>=2.3.8,<2.4", "faiss-gpu-cu12"],
    "aedat": ["aedat>=2.0"],
    "slurm": ["hydra-submitit-launcher>=1.2"],
    "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.17"],
    "video": ["imageio-ffmpeg>=0.5"],
    "dev": [
        "pytest>=7",
        "packaging>=23",  # tests/test_constraints.py reads requirements with it
        "ruff==0.17.6",
        "aedat>=2.0",
        "hydra-submitit-launcher>=1.2",
        "tensorboard>=2.10",
        "faster-coco-eval>=1.6",
        "onnx>=1.16",
        "onnxscript>=0.2",
        "onnxruntime>=1.17",
        "imageio-ffmpeg>=0.5",
    ],
}

setup(
    name="evcmae",
    version="0.1.0",
    description=__doc__.strip().splitlines()[0],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"evcmae.conf": ["*/*.yaml", "*/*/*.yaml"], "evcmae.conf.common": ["*/*.yaml", "*/*/*.yaml"]},
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "h5py>=3.8",
        "hdf5plugin>=4.1",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.6",
        "pytorch-lightning>=2.6",  # callbacks.WeightAveraging (finetune/weight_average.py)
        "hydra-core>=1.3",
        "einops>=0.6",
        "wandb>=0.16",
        "tensorboard>=2.10",  # logger=tensorboard, as the README shows it, after the README's install
        "pycocotools>=2.0.6",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "evcmae-info = evcmae.tools.info:main",
            "evcmae-preprocess = evcmae.tools.preprocess:main",
            "evcmae-synth = evcmae.tools.synth:main",
            "evcmae-viz = evcmae.tools.visualize:main",
            "evcmae-bench = evcmae.tools.bench:main",
            "evcmae-pretrain = evcmae.tools.pretrain:main",
            "evcmae-sweep-summary = evcmae.tools.sweep_summary:main",
            "evcmae-compare = evcmae.tools.compare:main",
            "evcmae-finetune = evcmae.tools.finetune:main",
            "evcmae-study = evcmae.tools.study:main",
            "evcmae-evaluate = evcmae.tools.evaluate:main",
            "evcmae-detect = evcmae.tools.detect:main",
            "evcmae-demo = evcmae.tools.demo:main",
            "evcmae-probe = evcmae.tools.probe:main",
            "evcmae-convert-rvt = evcmae.tools.convert_rvt:main",
            "evcmae-export = evcmae.tools.export:main",
        ]
    },
)
