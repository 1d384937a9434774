"""evcmae: self-supervised pretraining for event cameras (EMA teacher, masked student, sparse
voxel backbone) and fine-tuning into the RVT/YOLOX detector."""
from setuptools import setup

# The command-line scripts live in tools/ (not an importable package in the checkout); they are
# installed under the package name ``evcmae_tools`` so nothing shadows a common module name.
PACKAGES = ["events", "events.synth", "pretrain", "finetune", "losses", "backbones", "evcmae_tools", "evcmae_conf"]

SPCONV_CPU = "spconv>=2.3.6,<2.4"
EXTRAS = {
    "cpu": [SPCONV_CPU, "faiss-cpu>=1.7"],
    "cu120": ["spconv-cu120==2.3.6", "faiss-gpu-cu12"],
    "cu126": ["spconv-cu126>=2.3.8,<2.4", "faiss-gpu-cu12"],
    "aedat": ["aedat>=2.0"],
    "slurm": ["hydra-submitit-launcher>=1.2"],
    "dev": ["pytest>=7", "aedat>=2.0", "hydra-submitit-launcher>=1.2", "tensorboard>=2.10"],
}

setup(
    name="evcmae",
    version="0.1.0",
    description=__doc__.strip().splitlines()[0],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"evcmae_tools": "tools", "evcmae_conf": "conf"},
    package_data={"evcmae_conf": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "h5py>=3.8",
        "hdf5plugin>=4.1",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.6",
        "pytorch-lightning>=2.1",
        "hydra-core>=1.3",
        "einops>=0.6",
        "wandb>=0.16",
        "pycocotools>=2.0.6",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "evcmae-info = evcmae_tools.info:main",
            "evcmae-preprocess = evcmae_tools.preprocess:main",
            "evcmae-synth = evcmae_tools.synth:main",
            "evcmae-viz = evcmae_tools.visualize:main",
            "evcmae-bench = evcmae_tools.bench:main",
            "evcmae-pretrain = evcmae_tools.pretrain:main",
            "evcmae-sweep-summary = evcmae_tools.sweep_summary:main",
            "evcmae-compare = evcmae_tools.compare:main",
            "evcmae-finetune = evcmae_tools.finetune:main",
            "evcmae-study = evcmae_tools.study:main",
            "evcmae-evaluate = evcmae_tools.evaluate:main",
            "evcmae-detect = evcmae_tools.detect:main",
            "evcmae-demo = evcmae_tools.demo:main",
        ]
    },
)
