"""evcmae: self-supervised pretraining for event cameras (EMA teacher, masked student, sparse
voxel backbone) and fine-tuning into the RVT/YOLOX detector."""
from setuptools import setup

# The command-line scripts live in tools/ (not an importable package in the checkout); they are
# installed under the package name ``evcmae_tools`` so nothing shadows a common module name.
PACKAGES = ["events", "events.synth", "pretrain", "finetune", "losses", "backbones", "evcmae_tools"]

SPCONV_CPU = "spconv>=2.3.6,<2.4"
EXTRAS = {
    "cpu": [SPCONV_CPU, "faiss-cpu>=1.7"],
    "cu120": ["spconv-cu120==2.3.6", "faiss-gpu-cu12"],
    "cu126": ["spconv-cu126>=2.3.8,<2.4", "faiss-gpu-cu12"],
    "aedat": ["aedat>=2.0"],
    "dev": ["pytest>=7", "aedat>=2.0"],
}

setup(
    name="evcmae",
    version="0.1.0",
    description=__doc__.strip().splitlines()[0],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"evcmae_tools": "tools"},
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "h5py>=3.8",
        "hdf5plugin>=4.1",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.6",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "evcmae-info = evcmae_tools.info:main",
            "evcmae-preprocess = evcmae_tools.preprocess:main",
            "evcmae-synth = evcmae_tools.synth:main",
            "evcmae-viz = evcmae_tools.visualize:main",
            "evcmae-bench = evcmae_tools.bench:main",
        ]
    },
)
