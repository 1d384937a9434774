"""What a non-editable install holds. The editable install used for development imports straight
from the checkout, so a subpackage missing from setup.py goes unnoticed there; a built wheel, or
``pip install --target`` as the GPU check does, then fails with ModuleNotFoundError (it did, for
pretrain/objectives). setuptools' build_py lays out exactly the files a wheel would carry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ["evcmae", "events", "pretrain", "finetune", "losses", "backbones", "tools", "conf"]


def _source_files(suffix: str) -> set[str]:
    """Checkout files with ``suffix`` as their installed paths (events/x.py -> evcmae/events/x.py)."""
    found = set()
    for top in TOP_FOLDERS:
        for path in (ROOT / top).rglob(f"*{suffix}"):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT)
            found.add(str(relative if top == "evcmae" else Path("evcmae") / relative))
    return found


def test_the_built_package_holds_every_module_and_config(tmp_path):
    build = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    built = {str(p.relative_to(build)) for p in build.rglob("*") if p.is_file()}
    modules, configs = _source_files(".py"), _source_files(".yaml")
    assert "evcmae/pretrain/objectives/base.py" in modules  # the subpackage that was once left out
    assert len(configs) > 30
    assert sorted(modules - built) == []
    assert sorted(configs - built) == []


def test_every_console_script_points_at_a_built_module():
    """Each ``evcmae-*`` entry point names a module that exists in the checkout's layout."""
    text = (ROOT / "setup.py").read_text()
    targets = re.findall(r'"evcmae-[\w-]+ = (evcmae\.[\w.]+):main"', text)
    assert len(targets) >= 10
    installed = _source_files(".py")
    for target in targets:
        assert target.replace(".", "/") + ".py" in installed, target
