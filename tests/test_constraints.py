"""constraints.txt, the pinned install: it covers every requirement setup.py names for the CPU
install, each pin satisfies setup.py's range, torch stays out of it, the GPU check installs the same
versions where the package is the same, and the README's two commands and CI install with it."""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from evcmae.tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
CPU_EXTRAS = ("cpu", "dev")
# The CUDA builds of spconv and cumm that the GPU check installs stand for these CPU packages.
CUDA_BUILDS = {"spconv-cu126": "spconv", "cumm-cu126": "cumm"}


def pins(text: str) -> dict[str, str]:
    """canonical name -> version of every ``name==version`` line; anything else is an error."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"constraints.txt:{number}: not an exact pin 'name==version': {line!r}")
        key = canonicalize_name(name.strip())
        if key in found:
            raise ValueError(f"constraints.txt:{number}: {name.strip()} is pinned twice")
        found[key] = version.strip()
    return found


@pytest.fixture(scope="module")
def pinned() -> dict[str, str]:
    return pins(CONSTRAINTS.read_text(encoding="utf-8"))


@pytest.fixture
def setup_arguments(monkeypatch) -> dict:
    """What the checkout's setup.py passes to setuptools.setup (read from the file, not from the
    installed metadata, which is as old as the last install; setuptools itself is not needed)."""
    captured: dict = {}
    recorder = types.ModuleType("setuptools")
    recorder.setup = lambda **kwargs: captured.update(kwargs)
    monkeypatch.setitem(sys.modules, "setuptools", recorder)
    monkeypatch.chdir(ROOT)  # setup.py reads README.md relative to where it runs
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return captured


def test_the_parser_rejects_what_pip_would_read_differently():
    assert pins("# header\nNumPy==2.4.6  # why\n\nfaiss_cpu==1.15.1\n") == {"numpy": "2.4.6", "faiss-cpu": "1.15.1"}
    with pytest.raises(ValueError, match=r"constraints.txt:1: not an exact pin"):
        pins("numpy>=2\n")
    with pytest.raises(ValueError, match=r"constraints.txt:2: NumPy is pinned twice"):
        pins("numpy==2.4.6\nNumPy==2.4.5\n")


def test_every_cpu_requirement_is_pinned_inside_setup_py_range(pinned, setup_arguments):
    requirements = list(setup_arguments["install_requires"])
    for extra in CPU_EXTRAS:
        requirements += setup_arguments["extras_require"][extra]
    assert len(requirements) > 20, "setup.py was not read"
    for text in requirements:
        requirement = Requirement(text)
        key = canonicalize_name(requirement.name)
        if key == "torch":
            continue
        assert key in pinned, f"constraints.txt pins no version of {requirement.name} (setup.py: {text})"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pinned[key]}, outside setup.py's {text}"
        )


def test_torch_is_left_to_the_platform_line(pinned):
    # A torch pin would make pip replace a GPU install's CUDA build with this CPU version.
    assert "torch" not in pinned
    assert not any(name.startswith("nvidia-") for name in pinned)


def test_the_gpu_check_installs_the_pinned_versions(pinned):
    for text, _why in gpu_check.WHEELS:
        requirement = Requirement(text)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"gpu_check.WHEELS: {text} is not an exact pin"
        name = CUDA_BUILDS.get(canonicalize_name(requirement.name), canonicalize_name(requirement.name))
        assert name in pinned, f"gpu_check.WHEELS installs {text}; constraints.txt pins no {name}"
        assert spec.version == pinned[name], (
            f"gpu_check.WHEELS installs {text}; constraints.txt pins {name}=={pinned[name]}"
        )


def test_the_readme_commands_and_ci_install_with_the_constraints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for extras in ('".[cpu]"', '".[cpu,dev]"'):
        assert f"pip install -e {extras} -c constraints.txt" in readme, extras
    assert 'pip install -e ".[cpu,dev]" -c constraints.txt && python -m pytest -q' in ci
