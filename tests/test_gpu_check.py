"""tools/gpu_check.py: packing wheels into parts and back, the device calls it plans, the JUnit
summary, and the whole run as a CPU dry run (install skipped, tests/gpu on the CPU, quick benchmarks)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from evcmae.tools import gpu_check


def _fake_wheel(folder: Path, name: str, version: str, payload: bytes) -> Path:
    """A wheel-shaped zip (deflated, as PyPI's are) with one module and its dist-info."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{name}/__init__.py", payload)
        z.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
    return path


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    # Repetitive payloads compress well, as the spconv library does; sizes force several parts.
    return [
        _fake_wheel(folder, "alpha", "1.0", b"x = 1\n" * 40_000),
        _fake_wheel(folder, "beta_pkg", "2.1", bytes(range(256)) * 3_000),
    ]


def test_pack_then_unpack_gives_back_every_wheel_member_for_member(wheels, tmp_path):
    dest = tmp_path / ".gpu"
    manifest = gpu_check.pack(wheels, dest, part_bytes=4096, log=lambda *_: None)
    parts = [dest / p["path"] for p in manifest["parts"]]
    assert len(parts) > 1 and all(p.stat().st_size <= 4096 for p in parts)
    assert sum(p["bytes"] for p in manifest["parts"]) == manifest["bundle"]["bytes"]
    assert [w["wheel"] for w in manifest["wheels"]] == [w.name for w in wheels]
    assert json.loads((dest / "manifest.json").read_text()) == manifest

    out = gpu_check.unpack_bundle(parts, manifest, tmp_path / "unpacked")
    assert [w.name for w in out] == [w.name for w in wheels]
    for original, restored in zip(wheels, out):
        with zipfile.ZipFile(original) as a, zipfile.ZipFile(restored) as b:
            assert a.namelist() == b.namelist()
            assert all(a.read(n) == b.read(n) for n in a.namelist())
            assert all(info.compress_type == zipfile.ZIP_STORED for info in b.infolist())


def test_packing_again_reuses_the_compressed_wheels(wheels, tmp_path):
    dest = tmp_path / ".gpu"
    messages = []
    first = gpu_check.pack(wheels, dest, part_bytes=4096, log=messages.append)
    assert len(messages) == 2
    second = gpu_check.pack(wheels, dest, part_bytes=4096, log=messages.append)
    assert len(messages) == 2  # nothing compressed twice
    assert first["bundle"] == second["bundle"] and first["parts"] == second["parts"]


def test_parts_travel_one_per_call_and_meet_in_the_stash(wheels, tmp_path):
    """Call 1 carries part 0 and stashes it; the last call carries the last part and finds the
    rest in the stash. A part that never arrived is named in the error."""
    dest, stash = tmp_path / ".gpu", tmp_path / "stash"
    manifest = gpu_check.pack(wheels, dest, part_bytes=4096, log=lambda *_: None)
    names = [Path(p["path"]).name for p in manifest["parts"]]
    calls = gpu_check.device_calls(manifest)
    assert len(calls) == len(names)
    assert [c["carry"][1] for c in calls] == [f".gpu/{p['path']}" for p in manifest["parts"]]
    assert all(c["carry"][0] == ".gpu/manifest.json" for c in calls)
    assert all("stash" in c["command"] for c in calls[:-1]) and 'run --out "$OUT"' in calls[-1]["command"]
    assert calls[-1]["timeout_s"] == 600

    # Each earlier call: only its own part is on the machine, then it is stashed.
    parts_dir = dest / "parts"
    held = {n: (parts_dir / n).read_bytes() for n in names}
    for n in names:
        (parts_dir / n).unlink()
    for i, n in enumerate(names[:-1]):
        (parts_dir / n).write_bytes(held[n])
        state = gpu_check.stash_parts(dest, stash)
        assert state["present"] == names[: i + 1] and state["missing"] == names[i + 1 :]
        (parts_dir / n).unlink()  # the next call's tree may not hold it
    with pytest.raises(gpu_check.CheckError, match=names[-1]):
        gpu_check.gather_parts(dest, stash)
    (parts_dir / names[-1]).write_bytes(held[names[-1]])
    found = gpu_check.gather_parts(dest, stash)
    assert [p.name for p in found] == names


def test_a_damaged_part_is_refused(wheels, tmp_path):
    dest = tmp_path / ".gpu"
    manifest = gpu_check.pack(wheels, dest, part_bytes=4096, log=lambda *_: None)
    part = dest / manifest["parts"][0]["path"]
    part.write_bytes(b"\0" + part.read_bytes()[1:])
    with pytest.raises(gpu_check.CheckError, match=f"missing or damaged: \\['{part.name}'\\]"):
        gpu_check.gather_parts(dest, tmp_path / "stash")


def test_select_wheels_names_the_missing_requirement(tmp_path):
    with pytest.raises(gpu_check.CheckError, match=r"expected one wheel of spconv-cu126==2.3.8, found none"):
        gpu_check.select_wheels(tmp_path)


def test_junit_summary_counts_outcomes_and_keeps_properties(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(
        """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.gpu.test_a" name="test_ok" time="1.5">
  <properties><property name="faiss_backend" value="gpu"/></properties></testcase>
<testcase classname="tests.gpu.test_a" name="test_bad" time="0.1"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.gpu.test_a" name="test_skip" time="0"><skipped message="no CUDA"/></testcase>
<testcase classname="tests.gpu.test_b" name="test_err" time="0"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""
    )
    summary = gpu_check.junit_summary(path)
    assert {k: summary[k] for k in ("passed", "failed", "skipped", "error", "total")} == {
        "passed": 1,
        "failed": 1,
        "skipped": 1,
        "error": 1,
        "total": 4,
    }
    ok, bad = summary["tests"][:2]
    assert ok == {
        "test": "tests.gpu.test_a::test_ok",
        "outcome": "passed",
        "seconds": 1.5,
        "properties": {"faiss_backend": "gpu"},
    }
    assert bad["outcome"] == "failed" and bad["message"] == "assert 1 == 2"
    assert gpu_check.junit_summary(tmp_path / "absent.xml") == {"error": "absent.xml was not written"}


def test_the_gpu_plan_runs_every_benchmark_on_cuda_within_the_budget():
    plan = gpu_check.bench_plan(dry_run=False)
    names = [name for name, _, _ in plan]
    assert names[:3] == ["backbone", "pretrain", "detector_eager"]
    assert all(args[args.index("--device") + 1] == "cuda" for _, args, _ in plan)
    assert all(limit < gpu_check.BUDGET_S for _, _, limit in plan)
    assert gpu_check.BUDGET_S + 30 <= 600  # the device call's own limit, with room to return the files


def test_a_rerun_can_repeat_only_the_named_benchmarks():
    plan = gpu_check.bench_plan(dry_run=False)
    assert gpu_check.select_benchmarks(plan, None) == plan == gpu_check.select_benchmarks(plan, "all")
    chosen = gpu_check.select_benchmarks(plan, "detector_eager, pretrain")
    assert [name for name, _, _ in chosen] == ["pretrain", "detector_eager"]  # the plan's order
    with pytest.raises(gpu_check.CheckError, match=r"unknown benchmark\(s\) \['pretrian'\]"):
        gpu_check.select_benchmarks(plan, "pretrain,pretrian")


def test_a_misspelt_benchmark_stops_the_run_before_anything_is_installed(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["run", "--out", str(out), "--benchmarks", "pretrian"]) == 2
    assert "unknown benchmark(s) ['pretrian']" in capsys.readouterr().err
    assert not out.exists()  # no install, no test, no JSON: the device time is not spent


def test_the_wrapper_script_runs_the_module():
    script = Path(gpu_check.__file__).with_suffix(".sh")
    assert script.is_file() and script.stat().st_mode & 0o111, "tools/gpu_check.sh must be executable"
    assert "gpu_check.py" in script.read_text()


@pytest.mark.slow
def test_dry_run_writes_the_same_json_as_a_gpu_run(tmp_path, monkeypatch):
    """The whole pipeline on the CPU: tests/gpu forced onto the CPU, quick benchmarks, one JSON
    and a log. Takes about two minutes on a 2-core machine."""
    out = tmp_path / "out"
    code = gpu_check.main(["run", "--dry-run", "--out", str(out)])
    result = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert code == 0, (result.get("failures"), log[-3000:])
    assert result["dry_run"] is True and result["failures"] == []
    assert set(result) >= {"machine", "install", "tests", "benchmarks", "stages", "elapsed_s", "budget_s"}
    assert result["machine"]["torch"] and result["machine"]["cpus"] >= 1
    tests = result["tests"]
    assert tests["exit"] == 0 and tests["failed"] == tests["error"] == 0
    ran = {t["test"].split("::")[0].rsplit(".", 1)[-1] for t in tests["tests"] if t["outcome"] == "passed"}
    assert ran == {"test_spconv_cuda", "test_mixed_precision", "test_faiss_probe", "test_ddp_nccl"}
    # Only the float16 (CUDA-only) cases are left out on the CPU.
    assert all("float16" in t["test"] or "fp16" in t["test"] for t in tests["tests"] if t["outcome"] == "skipped")
    bench = result["benchmarks"]
    assert set(bench) == {"backbone", "pretrain", "detector_eager"}
    assert bench["backbone"]["device"] == "cpu" and [r["occupancy"] for r in bench["backbone"]["rows"]] == [
        0.02,
        0.05,
        0.2,
    ]
    assert bench["pretrain"]["steps_per_s"] > 0 and bench["pretrain"]["voxels_per_s"] > 0
    assert {r["input"] for r in bench["detector_eager"]["rows"]} == {"sparse", "histogram"}
    assert "[tests] exit 0" in log and "gpu_check: tests" in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "junit.xml"]
