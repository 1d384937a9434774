"""The installed package claims one top-level name, and its public API resolves."""

import subprocess
import sys

import pytest

FOLDERS = ("events", "pretrain", "finetune", "losses", "backbones", "tools", "conf")


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    # A neutral working directory: the checkout root on sys.path would expose its folders by path.
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", FOLDERS)
def test_folder_is_a_subpackage_not_a_top_level_name(name, tmp_path):
    proc = _python(f"import evcmae.{name}\nimport {name}", tmp_path)
    assert f"No module named '{name}'" in proc.stderr, proc.stderr


def test_public_api_resolves_lazily(tmp_path):
    code = (
        "import sys, evcmae\n"
        "assert 'torch' not in sys.modules, 'import evcmae must stay light'\n"
        "for name in evcmae.__all__: getattr(evcmae, name)\n"
        "print(' '.join(evcmae.__all__))"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {
        "read_events",
        "Events",
        "Voxelizer",
        "VoxelBatch",
        "load_backbone",
        "EventDetector",
        "load_detector",
        "detect",
    }


def test_help_shows_the_api(tmp_path):
    proc = _python("import evcmae; help(evcmae)", tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("read_events", "Voxelizer", "load_backbone", "EventDetector", "load_detector", "detect"):
        assert name in proc.stdout


def test_unknown_attribute_is_an_attribute_error():
    import evcmae

    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = evcmae.no_such_thing


def test_api_reads_and_voxelizes_a_recording(synth_tiny):
    import evcmae

    recording = next((synth_tiny / "train").glob("*_td.h5"))
    events = evcmae.read_events(recording, 0, 50_000)
    assert len(events) > 0 and isinstance(events, evcmae.Events)
    batch = evcmae.Voxelizer(width=events.width, height=events.height)([events], [0])
    assert batch.coords.shape[0] > 0
