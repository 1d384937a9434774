"""Whether a run folder was made with the settings a planned run would use.

Every pretraining and fine-tuning run records the config it was composed from (Hydra writes it to
``<run>/.hydra/config.yaml``). Comparing a planned run's overrides with the recorded ones is not
enough: a changed config default changes every run while no override changes. So the planned run's
config is composed the way its tool composes it and compared with the recorded one, key by key.

Code changes that keep the config as it was (a fixed loss, say) are not seen by this comparison,
so each run folder also records the code it was made with (``code_version.txt``: the git commit,
``-dirty`` with uncommitted changes) and the packages and CPU kernels it ran on (``environment.json``:
the dependencies are not pinned, so a fresh install can bring newer ones), and the study's report
lists both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

APPS = ("pretrain", "finetune")

# Settings that say where the study put a run, or which run it starts from, not how it runs: a
# copied or renamed folder keeps its run. The run a fine-tuning starts from is compared on its own.
LOCATIONS = ("record.root", "model.pretrained")
_ELSEWHERE = "<a run folder>"


def compose_app(app: str, overrides: list[str]) -> dict:
    """The config ``evcmae-<app>`` composes for ``overrides`` (unresolved, as Hydra records it).
    Composed beside any Hydra app already running (the study's own), which is left as it was."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evcmae.tools.pretrain import config_dir

    if app not in APPS:
        raise ValueError(f"no config to compose for {app!r}; apps: {', '.join(APPS)}")
    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(app), version_base="1.3"):
            cfg = compose(config_name=app, overrides=[o for o in overrides if not o.startswith("hydra.")])
    finally:
        GlobalHydra.instance().clear()
        if running is not None:
            GlobalHydra.instance().initialize(running)
    return OmegaConf.to_container(cfg, resolve=False)


def recorded_config(run_dir: Path) -> dict | None:
    """The config a run folder's run was composed from, or None when it recorded none."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _located(flat: dict) -> dict:
    return {k: (_ELSEWHERE if k in LOCATIONS and v is not None else v) for k, v in flat.items()}


def setting_differences(planned: dict, recorded: dict, ignore: tuple = ()) -> list[str]:
    """``key: recorded -> planned`` for every setting in which two composed configs differ, by
    dotted key, except keys under a prefix in ``ignore``; a key only one of them has shows as
    ``(absent)`` on the other side."""
    now, then = _located(_flat(planned)), _located(_flat(recorded))
    missing = "(absent)"
    return [
        f"{key}: {then.get(key, missing)} -> {now.get(key, missing)}"
        for key in sorted(now.keys() | then.keys())
        if now.get(key, missing) != then.get(key, missing) and not key.startswith(tuple(ignore))
    ]


CODE_FILE = "code_version.txt"


def code_version(source: Path | None = None) -> str:
    """The code a run is made with: the git commit of the checkout holding evcmae (``-dirty``
    when tracked files have uncommitted changes), or ``evcmae <version>`` for an installed copy.
    Asked anew each time: a study runs for hours, and each run uses the code on disk when it
    starts, not the code the study started with."""
    import evcmae

    folder = Path(source or Path(evcmae.__file__).resolve().parent)

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"evcmae {version('evcmae')}"
        except PackageNotFoundError:
            return "evcmae (version unknown)"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def record_code(run_dir: Path) -> None:
    (Path(run_dir) / CODE_FILE).write_text(code_version() + "\n")


def recorded_code(run_dir: Path) -> str | None:
    path = Path(run_dir) / CODE_FILE
    return path.read_text().strip() if path.is_file() else None


def _counted(labels) -> str:
    counts = Counter(labels)
    return ", ".join(f"{label} ({n} run{'s' if n != 1 else ''})" for label, n in counts.most_common())


def code_versions_line(run_dirs) -> str:
    """Which code made the runs, most runs first: ``abc1234 (3 runs), not recorded (1 run)``."""
    return _counted(recorded_code(d) or "not recorded" for d in run_dirs)


ENV_FILE = "environment.json"
# The distributions whose arithmetic or data handling a run's numbers depend on. Matched by name
# prefix: spconv and faiss ship under per-platform names (spconv-cu126, faiss-gpu-cu12, ...).
NUMERIC_PACKAGES = (
    "torch",
    "spconv",
    "cumm",
    "numpy",
    "pytorch-lightning",
    "faiss",
    "h5py",
    "hdf5plugin",
    "hydra-core",
)


def package_versions() -> dict[str, str]:
    """Python's version and those of the installed ``NUMERIC_PACKAGES``, by distribution name."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if any(name == p or name.startswith(p + "-") for p in NUMERIC_PACKAGES):
            found[name] = dist.version
    return {"python": platform.python_version(), **dict(sorted(found.items()))}


# Environment variables that cap the instruction set of torch's, MKL's or oneDNN's CPU kernels, or
# fix MKL's code path. Each changes training results on the same CPU (results/cpu_kernels), so a
# run records those set.
KERNEL_SETTINGS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
)


def environment() -> dict[str, str]:
    """``package_versions``, the instruction set torch's CPU kernels use here (AVX2, AVX512...) and
    any ``KERNEL_SETTINGS`` set: the same torch sums floats in another order on another CPU."""
    import torch  # a dependency; get_cpu_capability is in every torch setup.py accepts (>= 2.1)

    caps = {name: os.environ[name] for name in KERNEL_SETTINGS if os.environ.get(name)}
    return {**package_versions(), "torch CPU kernels": torch.backends.cpu.get_cpu_capability(), **caps}


def record_environment(run_dir: Path) -> None:
    (Path(run_dir) / ENV_FILE).write_text(json.dumps(environment(), indent=1) + "\n")


def recorded_environment(run_dir: Path) -> dict | None:
    path = Path(run_dir) / ENV_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _environment_label(env: dict | None) -> str:
    return ", ".join(f"{name} {v}" for name, v in env.items()) if env else "not recorded"


def environments_line(run_dirs) -> str:
    """The package versions the runs ran on, most runs first; runs on different versions are
    listed apart (``python 3.11.7, torch 2.13.0, ... (8 runs), not recorded (1 run)``), since the
    same code and seed can give other numbers on another numpy or spconv."""
    return _counted(_environment_label(recorded_environment(d)) for d in run_dirs)


def differing_environment(run_dirs) -> dict[str, dict[str, list[str]]]:
    """The recorded environment entries on which the runs disagree: entry -> value -> the run
    folders, each as ``parent/name`` (``finetune/scratch-labels0.1-seed0``, ``pretrain/full``), empty
    when every run that recorded one ran on the same. Runs without an environment.json are left out
    (unknown is not a difference)."""
    envs = {f"{Path(d).parent.name}/{Path(d).name}": env for d in run_dirs if (env := recorded_environment(d))}
    entries = sorted({k for env in envs.values() for k in env})
    differing = {}
    for entry in entries:
        values: dict[str, list[str]] = {}
        for name, env in envs.items():
            values.setdefault(env.get(entry, "not set"), []).append(name)
        if len(values) > 1:
            differing[entry] = values
    return differing
