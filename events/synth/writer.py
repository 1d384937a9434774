"""Writing a synthetic benchmark to disk in the raw Gen4/eTraM layout:
``DIR/<split>/<name>_td.h5`` (+ ``<name>_bbox.npy`` for labelled splits) and ``DIR/synth.json``."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..h5 import write_h5
from ..labels import save_labels
from .classes import CLASS_NAMES
from .presets import SPLITS, Preset, get_preset
from .recording import synthesize

FORMAT_VERSION = 1


def recording_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:03d}"


def _write_one(args):
    preset, seed, split, index, out_dir = args
    start = time.perf_counter()
    rec = synthesize(preset, seed, split, index)
    folder = Path(out_dir) / split
    name = recording_name(split, index)
    write_h5(folder / f"{name}_td.h5", rec.events, preset.width, preset.height)
    if split != "pretrain":
        save_labels(folder / f"{name}_bbox.npy", rec.labels)
    info = {
        "name": name,
        "events": len(rec.events),
        "boxes": int(len(rec.labels)),
        "duration_us": rec.duration_us,
        "frame_dt_us": round(rec.frame_dt_us, 3),
        "objects": rec.n_objects,
    }
    return split, info, time.perf_counter() - start


def _prepare(out_dir: Path) -> None:
    """Refuse to write into a folder of other data; clear our own files from an earlier run, so a
    smaller preset never leaves stale recordings behind."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "synth.json").exists():
            raise FileExistsError(f"{out_dir} is not empty and holds no synth.json; choose an empty or new folder")
        for split in SPLITS:
            for f in (out_dir / split).glob("synth_*"):
                if f.name.endswith(("_td.h5", "_bbox.npy")):
                    f.unlink()
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)


def generate(out_dir, preset: str | Preset = "tiny", seed: int = 0, workers: int = 1, log=None) -> dict:
    """Generate every recording of ``preset`` into ``out_dir`` and return the summary that is also
    written to ``synth.json`` (plus ``seconds``, the wall time, which the file leaves out so that
    equal inputs give byte-identical outputs). ``workers`` > 1 generates recordings in parallel
    processes; the files do not depend on it."""
    p = get_preset(preset)
    out_dir = Path(out_dir)
    _prepare(out_dir)
    jobs = [(p, int(seed), split, i, os.fspath(out_dir)) for split in SPLITS for i in range(p.count(split))]
    start = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_one, jobs))
    else:
        results = []
        for job in jobs:
            results.append(_write_one(job))
            if log:
                split, info, sec = results[-1]
                log(f"  {split}/{info['name']}: {info['events']} events, {info['boxes']} boxes, {sec:.1f} s")
    splits = {s: [info for split, info, _ in results if split == s] for s in SPLITS}
    summary = {
        "format_version": FORMAT_VERSION,
        "preset": p.name,
        "seed": int(seed),
        "width": p.width,
        "height": p.height,
        "classes": list(CLASS_NAMES),
        "parameters": asdict(p),
        "splits": splits,
        "totals": {
            s: {"recordings": len(v), "events": sum(r["events"] for r in v), "boxes": sum(r["boxes"] for r in v)}
            for s, v in splits.items()
        },
    }
    with open(out_dir / "synth.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return {**summary, "seconds": time.perf_counter() - start}


def changed_parameters(wanted: dict, written: dict) -> list[str]:
    """The keys whose values differ between two ``synth.json`` parameter sets, sorted."""
    return sorted(k for k in set(wanted) | set(written) if wanted.get(k) != written.get(k))


def stale_parameters(out_dir, preset: str | Preset, seed: int = 0) -> list[str]:
    """The parameters (``seed``, ``recordings``, ...) in which the dataset ``out_dir/synth.json``
    describes differs from ``preset`` at ``seed``; empty when it is that dataset, ``["synth.json"]``
    when the file cannot be read (a damaged description: the dataset is made again)."""
    try:
        with open(Path(out_dir) / "synth.json", encoding="utf-8") as f:
            written = json.load(f)
        params = written["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["synth.json"]
    # through JSON, so that tuples and nested dataclasses compare as they were written
    wanted = json.loads(json.dumps(asdict(get_preset(preset))))
    return (["seed"] if written.get("seed") != int(seed) else []) + changed_parameters(wanted, params)


def ensure_generated(out_dir, preset: str | Preset, seed: int = 0, workers: int = 1) -> bool:
    """Generate ``preset`` into ``out_dir`` unless that dataset is already there (its
    ``synth.json``): the first-use step of every data module and of evcmae-study. A dataset
    generated with other parameters (an older preset with fewer val recordings, say) is generated
    again: every file is a function of the preset and the seed. True if it generated."""
    out_dir = Path(out_dir)
    name = preset if isinstance(preset, str) else preset.name
    if (out_dir / "synth.json").exists():
        stale = stale_parameters(out_dir, preset, seed)
        if not stale:
            return False
        print(
            f"evcmae: {out_dir} holds the '{name}' dataset with other {', '.join(stale)}; generating it again",
            flush=True,
        )
    else:
        print(f"evcmae: generating the synthetic '{name}' dataset into {out_dir} (first use)", flush=True)
    generate(out_dir, preset, seed, workers=workers)
    return True
