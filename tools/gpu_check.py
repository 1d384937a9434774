"""gpu_check: the GPU tests and benchmarks in one prepared run on a GPU machine without internet.

Three steps (docs/gpu_check.md has the whole procedure):

    python -m evcmae.tools.gpu_check prepare        # here, with PyPI: wheels -> .gpu/parts + manifest
    python3 tools/gpu_check.py stash                # there, each call but the last: keep the parts
    python3 tools/gpu_check.py run --out "$OUT"     # there, last call: install, tests, benchmarks
    python -m evcmae.tools.gpu_check run --dry-run --out DIR   # here: the same pipeline on the CPU

The GPU machine has no package index and takes at most 64 MiB per call, while the spconv wheel alone
is 70 MB. ``prepare`` downloads every wheel the machine lacks (cp312, manylinux), rewrites each as
an uncompressed zip and compresses that with xz (the spconv wheel's 284 MB library shrinks to about
25 MB this way, against 70 MB deflated), tars them and cuts the tar into parts that travel one per
call. ``run`` checks and joins the parts, installs the wheels and evcmae into a target folder with
pip (offline), then runs tests/gpu and ``evcmae-bench ... --device cuda`` under one time budget and
writes one JSON and a log into the output folder.

Only the standard library is imported at module level: on the GPU machine this file runs before
anything it installs exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
# 64 MiB travel per call: the working tree (~1.5 MB) and the manifest go too; the rest is margin.
PART_BYTES = 56 * MIB
DEFAULT_DIR = ".gpu"
STASH = Path("/tmp/evcmae-gpu")
BUDGET_S = 570  # the whole run, install included: 10 minutes less a margin for the call itself

# What the GPU machine lacks (docs/gpu_check.md; its image holds torch, Lightning, numpy, h5py,
# pybind11, ninja, requests, portalocker, sympy, PyYAML...). Pins are constraints.txt's, the
# versions CI runs, except that the CUDA builds replace spconv/cumm (tests/test_constraints.py).
# Everything travels with --no-deps, so each dependency that is missing there is named here.
WHEELS = (
    ("spconv-cu126==2.3.8", "sparse convolutions; the CUDA 12.6 build has Python 3.12 wheels"),
    ("cumm-cu126==0.7.11", "spconv's kernel library; spconv 2.3.8 requires cumm-cu126>=0.7.11,<0.8.0"),
    ("pccm==0.4.16", "needed by cumm and spconv"),
    ("ccimport==0.4.4", "needed by cumm and spconv"),
    ("lark==1.3.1", "needed by pccm"),
    ("fire==0.7.1", "needed by cumm, spconv, pccm"),
    ("termcolor==3.3.0", "needed by fire"),
    ("hydra-core==1.3.8", "evcmae's configuration"),
    ("omegaconf==2.3.1", "needed by hydra-core"),
    ("antlr4-python3-runtime==4.9.3", "needed by omegaconf (an sdist only: built into a wheel here)"),
    ("hdf5plugin==7.1.0", "the Blosc filter of the event files"),
    ("pycocotools==2.0.11", "COCO evaluation"),
    ("faiss-cpu==1.15.1", "the k-NN probe's search (faiss-gpu has no wheel that fits)"),
    ("pytorch-lightning==2.6.6", "fine-tuning builds callbacks.WeightAveraging (2.6); the image may hold an older one"),
)
SDIST_ONLY = {"antlr4-python3-runtime"}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# What must import after the install, and the versions worth recording.
IMPORT_CHECK = (
    "import json, torch, spconv, cumm, hydra, omegaconf, hdf5plugin, pycocotools, faiss, pytorch_lightning, evcmae\n"
    "from evcmae.backbones.spconv_compat import spconv as sp\n"
    "print(json.dumps({'spconv': spconv.__version__, 'cumm': cumm.__version__, 'hydra': hydra.__version__,"
    " 'faiss': faiss.__version__, 'pytorch_lightning': pytorch_lightning.__version__, 'torch': torch.__version__,"
    " 'evcmae': evcmae.__file__}))\n"
)


class CheckError(RuntimeError):
    """A step of the check cannot go on; the message says what is missing and what to do."""


# ---------------------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def canonical(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 503 normalised, underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def store_wheel(src: Path, dst: Path) -> None:
    """Rewrite a wheel as an uncompressed zip with the same members: still a valid wheel (its
    RECORD hashes the members, not the archive), and xz then sees the raw bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            out = zipfile.ZipInfo(info.filename, info.date_time)
            out.external_attr, out.create_system = info.external_attr, info.create_system
            with zin.open(info) as data, zout.open(out, "w") as target:
                shutil.copyfileobj(data, target, MIB)


def xz_file(src: Path, dst: Path, preset: int = 6) -> None:
    """xz-compress ``src``; the xz tool with all cores when there is one, else Python's lzma."""
    if shutil.which("xz"):
        with open(dst, "wb") as out:
            subprocess.run(["xz", f"-{preset}", "-T0", "-c", str(src)], stdout=out, check=True)
        return
    with open(src, "rb") as f, lzma.open(dst, "wb", preset=preset) as out:
        shutil.copyfileobj(f, out, MIB)


def split_file(path: Path, part_bytes: int, out_dir: Path) -> list[Path]:
    """Cut ``path`` into ``out_dir/<name>.000, .001, ...`` of at most ``part_bytes`` each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(path.name + ".*"):
        old.unlink()
    parts = []
    with open(path, "rb") as f:
        while chunk := f.read(part_bytes):
            part = out_dir / f"{path.name}.{len(parts):03d}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def join_parts(parts: list[Path], out: Path) -> None:
    with open(out, "wb") as f:
        for part in parts:
            with open(part, "rb") as p:
                shutil.copyfileobj(p, f, MIB)


# ---------------------------------------------------------------------------------------- prepare
def download(wheel_dir: Path, python_version: str = "3.12") -> list[Path]:
    """Every wheel in WHEELS for CPython ``python_version`` on manylinux x86-64, one per name."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    binary = [req for req, _ in WHEELS if req.split("==")[0] not in SDIST_ONLY]
    sdists = [req for req, _ in WHEELS if req.split("==")[0] in SDIST_ONLY]
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version]
        + ["--implementation", "cp", *platform_args, "-d", str(wheel_dir), *binary],
        check=True,
    )
    if sdists:  # pure-Python sdists: build their wheels here (the wheel is the same on any platform)
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheel_dir), *sdists], check=True)
    return select_wheels(wheel_dir)


def select_wheels(wheel_dir: Path) -> list[Path]:
    """The wheel of each WHEELS entry in ``wheel_dir``, at its pinned version; a clear error for
    one that is missing (several versions of one name would stop pip there)."""
    chosen = []
    for req, _ in WHEELS:
        name, version = req.split("==")
        found = [
            p for p in wheel_dir.glob("*.whl") if wheel_name(p) == canonical(name) and p.name.split("-")[1] == version
        ]
        if len(found) != 1:
            raise CheckError(f"{wheel_dir}: expected one wheel of {req}, found {[p.name for p in found] or 'none'}")
        chosen.append(found[0])
    return chosen


def pack(wheels: list[Path], dest: Path, part_bytes: int = PART_BYTES, log=print) -> dict:
    """Wheels -> ``dest/parts/bundle.tar.NNN`` and ``dest/manifest.json`` (returned).

    The bundle is a tar of ``<wheel>.xz`` members, each an xz-compressed uncompressed-zip copy of
    the wheel; the manifest lists every part's size and sha256, the bundle's, and each wheel's."""
    dest = Path(dest)
    work = dest / "xz"
    work.mkdir(parents=True, exist_ok=True)
    entries = []
    for wheel in wheels:
        packed = work / (wheel.name + ".xz")
        digest = sha256(wheel)
        stamp = work / (wheel.name + ".sha256")  # the source wheel's digest: redo if it changed
        if not (packed.exists() and stamp.exists() and stamp.read_text() == digest):
            log(f"gpu_check: compressing {wheel.name} ({wheel.stat().st_size / MIB:.1f} MiB)")
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                stored = Path(tmp) / wheel.name
                store_wheel(wheel, stored)
                xz_file(stored, packed)
            stamp.write_text(digest)
        entries.append(
            {
                "wheel": wheel.name,
                "sha256": digest,
                "bytes": wheel.stat().st_size,
                "xz_bytes": packed.stat().st_size,
            }
        )
    bundle = dest / "bundle.tar"
    with tarfile.open(bundle, "w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tar.gettarinfo(work / (e["wheel"] + ".xz"), arcname=e["wheel"] + ".xz")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(work / (e["wheel"] + ".xz"), "rb") as f:
                tar.addfile(info, f)
    parts = split_file(bundle, part_bytes, dest / "parts")
    root = dest.resolve()
    manifest = {
        "format": 1,
        "python": "3.12",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": {"bytes": bundle.stat().st_size, "sha256": sha256(bundle)},
        "parts": [
            {"path": str(p.resolve().relative_to(root)), "bytes": p.stat().st_size, "sha256": sha256(p)} for p in parts
        ],
        "wheels": entries,
    }
    bundle.unlink()  # the parts are what travels
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def device_calls(manifest: dict, folder: str = DEFAULT_DIR) -> list[dict]:
    """The device-tool ``run`` calls that carry the parts, in order: one part per call, the
    manifest with each, and the whole check in the last."""
    calls = []
    parts = manifest["parts"]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        command = (
            'PYTHONUNBUFFERED=1 python3 tools/gpu_check.py run --out "$OUT"'
            if last
            else "PYTHONUNBUFFERED=1 python3 tools/gpu_check.py stash"
        )
        calls.append(
            {
                "command": command,
                "carry": [f"{folder}/manifest.json", f"{folder}/{part['path']}"],
                "timeout_s": 600 if last else 120,
            }
        )
    return calls


def carry_folder(folder: str | Path) -> str:
    """``folder`` as the device tool's carry wants it: relative to the repository root."""
    path = Path(folder).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        raise CheckError(f"{path}: the parts must lie inside the checkout ({REPO}) to travel") from None


def print_plan(manifest: dict, folder: str = DEFAULT_DIR) -> None:
    folder = carry_folder(folder)
    total = sum(p["bytes"] for p in manifest["parts"])
    print(f"gpu_check: {len(manifest['wheels'])} wheels in {len(manifest['parts'])} parts, {total / MIB:.1f} MiB")
    print("Make these device-tool run calls back to back (the machine keeps files only ~30 s idle):")
    for i, call in enumerate(device_calls(manifest, folder), 1):
        print(f"  {i}. {json.dumps(call)}")
    print("The last call's $OUT holds gpu_check.json, gpu_check.log and junit.xml.")


def _checkout() -> Path:
    """The checkout this file runs from (prepare and run need its tree, not an installed copy)."""
    if not (REPO / "setup.py").is_file() or not (REPO / "tests" / "gpu").is_dir():
        raise CheckError(f"{REPO}: not an evcmae checkout; run tools/gpu_check.py from the repository")
    return REPO


def cmd_prepare(args) -> int:
    _checkout()
    dest = Path(args.dir)
    wheels = select_wheels(dest / "wheels") if args.no_download else download(dest / "wheels")
    manifest = pack(wheels, dest, int(args.part_mib * MIB))
    print_plan(manifest, args.dir)
    return 0


def cmd_plan(args) -> int:
    print_plan(load_manifest(Path(args.dir)), args.dir)
    return 0


# ---------------------------------------------------------------------------------------- there
def load_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise CheckError(f"{path}: no manifest; carry it with every call (run 'gpu_check prepare' here first)")
    return json.loads(path.read_text())


def _part_sources(part: dict, folder: Path, stash: Path) -> list[Path]:
    name = Path(part["path"]).name
    return [folder / part["path"], stash / "parts" / name]


def stash_parts(folder: Path, stash: Path = STASH) -> dict:
    """Copy the parts carried by this call into ``stash`` (outside the checkout, so that a later
    call's copy of the tree cannot replace them); returns {"present": [...], "missing": [...]}."""
    manifest = load_manifest(folder)
    (stash / "parts").mkdir(parents=True, exist_ok=True)
    present, missing = [], []
    for part in manifest["parts"]:
        carried, kept = _part_sources(part, folder, stash)
        if carried.is_file() and sha256(carried) == part["sha256"]:
            if not (kept.is_file() and kept.stat().st_size == part["bytes"]):
                shutil.copyfile(carried, kept)
        ok = kept.is_file() and sha256(kept) == part["sha256"]
        (present if ok else missing).append(Path(part["path"]).name)
    return {"present": present, "missing": missing}


def cmd_stash(args) -> int:
    state = stash_parts(Path(args.dir), Path(args.stash))
    print(f"gpu_check stash: have {state['present']}; still to come: {state['missing']}")
    return 0


def gather_parts(folder: Path, stash: Path) -> list[Path]:
    """Every part, checked against the manifest, from this call's carry or an earlier call's stash."""
    manifest = load_manifest(folder)
    found, missing = [], []
    for part in manifest["parts"]:
        good = next(
            (p for p in _part_sources(part, folder, stash) if p.is_file() and sha256(p) == part["sha256"]), None
        )
        (found.append(good) if good else missing.append(Path(part["path"]).name))
    if missing:
        raise CheckError(
            f"parts missing or damaged: {missing}. Each earlier call ('gpu_check.py stash', carrying its part) must "
            f"run on the same machine within ~30 s of the next; start again from the first call."
        )
    return found


def unpack_bundle(parts: list[Path], manifest: dict, wheel_dir: Path) -> list[Path]:
    """Join the parts, check the bundle, and decompress each wheel into ``wheel_dir``."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    bundle = wheel_dir / "bundle.tar"
    join_parts(parts, bundle)
    if sha256(bundle) != manifest["bundle"]["sha256"]:
        raise CheckError(f"{bundle}: the joined parts do not match the manifest's bundle (sha256)")
    wheels = []
    with tarfile.open(bundle) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if not name.endswith(".whl.xz") or member.name != name:
                raise CheckError(f"{bundle}: unexpected member {member.name!r}")
            wheel = wheel_dir / name[: -len(".xz")]
            with tar.extractfile(member) as src, lzma.open(src) as data, open(wheel, "wb") as out:
                shutil.copyfileobj(data, out, MIB)
            wheels.append(wheel)
    bundle.unlink()
    return wheels


# ---------------------------------------------------------------------------------------- run
class Run:
    """One check run: a deadline, a log file, and the result JSON rewritten after every stage, so
    that whatever finished is in the output folder even if the call is cut short."""

    def __init__(self, out: Path, budget_s: float, dry_run: bool):
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + budget_s
        self.log_path = out / "gpu_check.log"
        self.log_path.write_text("")
        self.result = {
            "format": 1,
            "dry_run": dry_run,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "budget_s": budget_s,
            "machine": {},
            "install": None,
            "tests": None,
            "benchmarks": {},
            "stages": {},
        }

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log(text)

    def save(self) -> None:
        self.result["elapsed_s"] = round(self.result["budget_s"] - self.remaining(), 1)
        path = self.out / "gpu_check.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.result, indent=1) + "\n")
        os.replace(path.with_suffix(".tmp"), path)

    def command(self, name: str, argv: list[str], limit_s: float, env=None, cwd=None) -> tuple[int | None, str]:
        """Run ``argv`` within ``limit_s`` (and the run's deadline); its output goes to the log;
        returns (exit code or None if stopped at the limit, stdout)."""
        timeout = min(limit_s, self.remaining() - 5)
        if timeout < 5:
            self.say(f"[{name}] not run: out of time")
            return None, ""
        self.say(f"[{name}] $ {' '.join(argv)}  (limit {timeout:.0f} s)")
        start = time.monotonic()
        # A session of its own, so that a stage stopped at its limit takes its children with it
        # (a DDP worker left running would hold the GPU through the next stages).
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            code = None
        seconds = round(time.monotonic() - start, 1)
        self.log(f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}")
        self.say(f"[{name}] {'timed out' if code is None else f'exit {code}'} after {seconds} s")
        self.result["stages"][name] = {"exit": code, "seconds": seconds, "timed_out": code is None}
        if code != 0:  # the JSON alone should say why; the log has the rest
            self.result["stages"][name]["stderr_tail"] = stderr[-1500:]
        self.save()
        return code, stdout


def _tail(text: str, limit: int = 400_000) -> str:
    """The end of a long output (the log must stay far below the 16 MiB a returned file may hold)."""
    return text if len(text) <= limit else f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]


def machine_info(python: str) -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
        )
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    probe = (
        "import json, torch\n"
        "d = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}\n"
        "if torch.cuda.is_available():\n"
        "    p = torch.cuda.get_device_properties(0)\n"
        "    d.update(gpu=p.name, capability=list(torch.cuda.get_device_capability(0)),"
        " memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,"
        " cudnn=torch.backends.cudnn.version())\n"
        "print(json.dumps(d))\n"
    )
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    try:
        info.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        info["torch_probe_error"] = done.stderr.strip()[-500:]
    return info


def junit_summary(path: Path) -> dict:
    """Counts and one entry per test (outcome, seconds, message, recorded properties)."""
    if not path.is_file():
        return {"error": f"{path.name} was not written"}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests, counts = [], {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
                    message = (node.get("message") or (node.text or "")).strip()[:1000]
                    break
            counts[outcome] += 1
            entry = {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": round(float(case.get("time") or 0), 2),
            }
            if message:
                entry["message"] = message
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            if props:
                entry["properties"] = props
            tests.append(entry)
    return {**counts, "total": len(tests), "tests": tests}


def install(run: Run, folder: Path, stash: Path, target: Path, python: str) -> dict:
    """Parts -> wheels -> ``target`` (pip, offline), then evcmae itself from the checkout."""
    start = time.monotonic()
    manifest = load_manifest(folder)
    wheels = unpack_bundle(gather_parts(folder, stash), manifest, stash / "wheels")
    run.say(f"[install] {len(wheels)} wheels unpacked in {time.monotonic() - start:.0f} s")
    if target.exists():
        shutil.rmtree(target)
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    code, _ = run.command("install_wheels", [*pip, "--target", str(target), *map(str, wheels)], 240)
    if code != 0:
        raise CheckError("pip could not install the wheels (see gpu_check.log)")
    code, _ = run.command(
        "install_evcmae", [*pip, "--no-build-isolation", "--target", str(target), str(REPO)], 120, cwd=str(REPO)
    )
    if code != 0:
        raise CheckError("pip could not install evcmae from the checkout (see gpu_check.log)")
    return {"target": str(target), "wheels": [w.name for w in wheels], "seconds": round(time.monotonic() - start, 1)}


def bench_plan(dry_run: bool) -> list[tuple[str, list[str], float]]:
    """(name, evcmae-bench arguments, time limit in s), in order of value per second. The dry run
    leaves out torch.compile (minutes per model on a 2-core CPU)."""
    if dry_run:
        device = ["--device", "cpu", "--quick"]
        return [
            ("backbone", ["backbone", *device], 120),
            ("pretrain", ["pretrain", *device], 180),
            ("detector_eager", ["detector", *device], 120),
        ]
    device = ["--device", "cuda"]
    compile_rows = ["--set", 'modes=["compile"]', "--set", 'precisions=["float16"]']
    return [
        ("backbone", ["backbone", *device], 120),
        ("pretrain", ["pretrain", *device], 150),
        ("detector_eager", ["detector", *device, "--set", 'modes=["eager"]'], 90),
        ("detector_compile_tiny", ["detector", *device, *compile_rows, "--set", 'sizes=["tiny"]'], 150),
        ("detector_compile_base", ["detector", *device, *compile_rows, "--set", 'sizes=["base"]'], 150),
    ]


def select_benchmarks(plan: list[tuple[str, list[str], float]], names: str | None) -> list:
    """The plan's benchmarks named in ``names`` (comma-separated; None or "all": every one), in the
    plan's order. A rerun on a nearly spent device budget repeats only what failed."""
    if names is None or names == "all":
        return plan
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = [name for name, _, _ in plan]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise CheckError(f"unknown benchmark(s) {unknown}; this plan has {known}")
    return [step for step in plan if step[0] in wanted]


def run_check(args) -> int:
    _checkout()
    benchmarks = select_benchmarks(bench_plan(args.dry_run), args.benchmarks)  # a bad name fails before the install
    out = Path(args.out)
    folder, stash, target = Path(args.dir), Path(args.stash), Path(args.target)
    run = Run(out, args.budget_s, args.dry_run)
    python = sys.executable
    run.say(f"gpu_check {'dry run on the CPU' if args.dry_run else 'run'}: budget {args.budget_s:.0f} s, output {out}")
    run.result["machine"] = machine_info(python)
    if shutil.which("nvidia-smi"):
        run.log(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout)
    run.save()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    failures = []
    if args.dry_run:
        # No install: the current environment is the one under test. The GPU tests run on the CPU.
        env["EVCMAE_GPU_TESTS_DEVICE"] = "cpu"
        run.result["install"] = {"skipped": "dry run: the current environment is used"}
    else:
        try:
            run.result["install"] = install(run, folder, stash, target, python)
        except CheckError as exc:
            run.result["install"] = {"error": str(exc)}
            run.say(f"[install] FAILED: {exc}")
            run.save()
            return 1
        # The checkout's own evcmae/ (the API package alone) must not shadow the installed one:
        # PYTHONSAFEPATH keeps the working directory off sys.path.
        env.update(PYTHONPATH=os.pathsep.join([str(target), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        env["PYTHONSAFEPATH"] = "1"
        code, stdout = run.command("import_check", [python, "-c", IMPORT_CHECK], 120, env=env, cwd=str(REPO))
        if code != 0:
            run.say("[install] the installed packages do not import (see gpu_check.log)")
            failures.append("import_check")
        else:
            run.result["install"]["versions"] = json.loads(stdout.strip().splitlines()[-1])
    run.save()

    junit = out / "junit.xml"
    test_argv = [python, "-m", "pytest", "tests/gpu", "-q", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}"]
    code, _ = run.command("tests", test_argv, args.tests_limit_s, env=env, cwd=str(REPO))
    run.result["tests"] = {"exit": code, **junit_summary(junit)}
    if code != 0:
        failures.append("tests")
    run.save()

    work = stash / "bench" if not args.dry_run else out / "bench_work"
    work.mkdir(parents=True, exist_ok=True)
    for name, bench_args, limit in benchmarks:
        code, stdout = run.command(
            f"bench_{name}", [python, "-m", "evcmae.tools.bench", *bench_args, "--json"], limit, env=env, cwd=str(work)
        )
        try:
            run.result["benchmarks"][name] = json.loads(stdout.strip().splitlines()[-1]) if code == 0 else None
        except (json.JSONDecodeError, IndexError):
            run.result["benchmarks"][name] = None
        if run.result["benchmarks"][name] is None:
            failures.append(f"bench_{name}")
        run.save()
    if args.dry_run:
        shutil.rmtree(work, ignore_errors=True)

    run.result["failures"] = failures
    run.save()
    tests = run.result["tests"]
    run.say(
        f"gpu_check: tests {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('error', 0)} errors, {tests.get('skipped', 0)} skipped; benchmarks "
        f"{sum(v is not None for v in run.result['benchmarks'].values())}/{len(run.result['benchmarks'])}; "
        f"{run.result['elapsed_s']} s; " + (f"FAILED: {failures}" if failures else "all done")
    )
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(REPO / DEFAULT_DIR), help="the ignored folder of wheels and parts")
    parser.add_argument("--stash", default=str(STASH), help="where parts wait between calls on the GPU machine")
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: download the wheels, compress and split them, print the calls")
    p.add_argument("--part-mib", type=float, default=PART_BYTES / MIB, help="largest part (MiB)")
    p.add_argument("--no-download", action="store_true", help="use the wheels already in DIR/wheels")
    sub.add_parser("plan", help="print the device calls for the prepared parts")
    sub.add_parser("stash", help="there: keep this call's part for the last call")
    r = sub.add_parser("run", help="there: install, run tests/gpu and the benchmarks; --dry-run: here, on the CPU")
    r.add_argument("--out", required=True, help="output folder ($OUT on the GPU machine)")
    r.add_argument("--dry-run", action="store_true", help="the same pipeline on the CPU, no install")
    r.add_argument("--budget-s", type=float, default=BUDGET_S, help="time for the whole run")
    r.add_argument("--tests-limit-s", type=float, default=240, help="time for tests/gpu")
    r.add_argument("--target", default=str(STASH / "site"), help="install folder for the wheels and evcmae")
    r.add_argument("--benchmarks", default=None, help="comma-separated benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    try:
        return {"prepare": cmd_prepare, "plan": cmd_plan, "stash": cmd_stash, "run": run_check}[args.step](args)
    except CheckError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
