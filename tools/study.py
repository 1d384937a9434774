"""evcmae-study: does pretraining help detection? The label-efficiency study and loss ablation.

    evcmae-study                                   # CPU scale: 'study' preset, about an hour on 2 cores
    evcmae-study scale=gpu                         # the same study on the 'bench' preset, one GPU
    evcmae-study seeds=[0,1,2] jobs=1 out=results/three_seeds
    evcmae-study finetune_lr=0.001 work_dir=outputs/study_lr1e-3   # another fine-tuning rate

1. pretraining once with every term (the four encoder losses and the RVT stages' reconstruction),
   once per ablated term (its λ = 0) and once with the occupancy loss alone (R-MAE-style baseline,
   random masking), all on the unlabelled split;
2. fine-tuning the same detector from scratch and from each pretrained teacher, with equal steps
   and hyper-parameters: scratch and full pretraining at every ``label_fractions`` entry, the
   ablations at ``ablation.label_fraction``, each for every seed; the checkpoint is chosen on the
   val split (best val/AP), then
3. evaluated once on the test split; and the representation probe on the full teacher, with its
   references and each ablation variant paired with it on the same boxes (``ablation.seeds=[]``
   runs the ablation at the probe alone, without fine-tuning). ``out`` gets the table, plots,
   summary.json, each fine-tuned ablation variant paired with the full method by seed
   (ablation.json), each fine-tuning run's val curve (val_curves.json), every run's composed config
   (configs/) and the exact commands (commands.sh).

Every run is a separate process (``jobs`` at once) in its own folder under ``work_dir``; a run
whose result exists is not run again, so an interrupted study continues where it stopped. A folder
whose run was composed with other settings (a changed default counts: tools/run_config.py) stops
the study before anything runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from evcmae.events.errors import OutputFolderError
from evcmae.pretrain import reporting
from evcmae.tools import run_config
from evcmae.tools.bench import machine
from evcmae.tools.cli import entry
from evcmae.tools.pretrain import config_dir
from evcmae.tools.study_report import (
    HAND_NOTES,
    aggregate,
    interval_text,
    markdown_table,
    read_curve,
    refresh_hand_notes,
    signed_text,
    summary_rows,
    tracks_text,
    write_json_or_remove,
    write_report,
)

LOSSES = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive", "rvt_stages")
REPEAT_SEED_STRIDE = 1000  # repeat r of seed s trains from seed s + 1000 r: apart from every study seed


@dataclass
class Job:
    """One process: a pretraining run (``kind`` pretrain) or a fine-tuning run followed by its test
    evaluation (``kind`` finetune)."""

    name: str
    kind: str
    dir: Path
    overrides: list
    condition: str = ""
    label_fraction: float | None = None
    seed: int | None = None
    needs: str | None = None  # the pretraining job whose teacher this run starts from
    protocol: str = "finetune"  # finetune | frozen (encoder frozen, the rest trained) | probe
    after: tuple = ()  # further runs that must be done first (the probe's supervised reference)
    evaluate_args: list = field(default_factory=list)  # for evcmae-evaluate, e.g. accelerator=gpu
    rescore: tuple = ()  # further evaluation protocols (eval.protocol) the test split is scored under
    repeat: int = 0  # >0: another training seed on the same seed's labelled subset (finetune_repeats)
    result: dict = field(default_factory=dict)
    rescored: dict = field(default_factory=dict)  # protocol -> test metrics under it
    seconds: float = 0.0

    @property
    def dependencies(self) -> tuple:
        return tuple(n for n in (self.needs, *self.after) if n)

    def rescore_dir(self, protocol: str) -> Path:
        return self.dir / f"eval_test_{protocol}"

    def rescore_result(self, protocol: str) -> Path:
        return self.rescore_dir(protocol) / "metrics.json"

    def _steps(self, checkpoint) -> list[tuple[str, list[str], Path | None]]:
        """(tool, arguments, result file) of each step: the run, and for fine-tuning the test
        evaluation, then one per protocol in ``rescore``. A step with a result file is skipped when
        the file exists; fine-tuning's is the test result, since it comes right after."""
        if self.kind != "finetune":
            return [(self.kind, list(self.overrides), None)]
        test = self.dir / "eval_test"
        steps = [
            (self.kind, list(self.overrides), test / "metrics.json"),
            (
                "evaluate",
                [f"checkpoint={checkpoint}", "split=test", f"out={test}", *self.evaluate_args],
                test / "metrics.json",
            ),
        ]
        for protocol in self.rescore:
            out = self.rescore_dir(protocol)
            args = [f"checkpoint={checkpoint}", "split=test", f"eval.protocol={protocol}", f"out={out}"]
            steps.append(("evaluate", [*args, *self.evaluate_args], self.rescore_result(protocol)))
        return steps

    def commands(self):
        """The commands still to run, each built when its turn comes: the test evaluations must
        name the checkpoint fine-tuning has just chosen on val, which does not exist before."""
        for index in range(len(self._steps(None))):
            tool, args, result = self._steps(best_checkpoint(self.dir))[index]
            if result is not None and result.is_file():
                continue
            yield [sys.executable, "-m", f"evcmae.tools.{tool}", *args]

    def shell_lines(self) -> list[str]:
        """The commands as a user types them (console scripts; evcmae-evaluate expands the pattern
        to the one best checkpoint)."""
        return [
            " ".join([f"evcmae-{tool}", *map(shlex.quote, args)])
            for tool, args, _ in self._steps(f"{self.dir}/checkpoints/best-step=*.ckpt")
        ]

    @property
    def result_path(self) -> Path:
        names = {"pretrain": "final_metrics.json", "probe": "probe.json", "finetune": "eval_test/metrics.json"}
        return self.dir / names[self.kind]

    def done(self) -> bool:
        exported = self.kind != "pretrain" or (self.dir / "teacher_backbone.pt").is_file()
        rescored = all(self.rescore_result(p).is_file() for p in self.rescore)
        return exported and rescored and self.result_path.is_file()

    def changed_settings(self, ignore: tuple = ()) -> list[str]:
        """How the settings this folder's run was made with differ from this job's, as
        ``key: then -> now`` (empty: none, or nothing run here yet). Pretraining and fine-tuning
        compare composed configs (tools/run_config.py), so a changed default counts; other runs,
        and runs that recorded no config, compare their override lists. Settings under a prefix in
        ``ignore`` are left out of the config comparison."""
        recorded = run_config.recorded_config(self.dir) if self.kind in run_config.APPS else None
        if recorded is not None:
            planned = run_config.compose_app(self.kind, self.overrides)
            return run_config.setting_differences(planned, recorded, tuple(ignore))
        old = self.recorded_overrides()
        return [] if old in (None, list(self.overrides)) else [f"overrides: {old} -> {list(self.overrides)}"]

    def recorded_overrides(self) -> list | None:
        """The overrides this run folder was last run with: the first command in its log that is
        not a test evaluation (a run made outside the study can have a log of evaluations only)."""
        log = self.dir / "study.log"
        if not log.is_file():
            return None
        with open(log) as f:
            for line in f:
                words = shlex.split(line[2:]) if line.startswith("$ ") else []
                if words and not _is_evaluation(words):
                    return words[3:]
        return None

    def load_result(self) -> dict:
        result = json.loads(self.result_path.read_text())
        self.result = {"rows": result} if isinstance(result, list) else result
        self.rescored = {
            p: json.loads(self.rescore_result(p).read_text()) for p in self.rescore if self.rescore_result(p).is_file()
        }
        return self.result


def _is_evaluation(command: list[str]) -> bool:
    """Whether a logged command (python -m evcmae.tools.X ...) is a test evaluation."""
    return command[1:3] == ["-m", "evcmae.tools.evaluate"]


def best_checkpoint(run_dir: Path) -> Path:
    """The val-selected checkpoint (ModelCheckpoint keeps one ``best-step=N.ckpt``), else last."""
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    return best[-1] if best else run_dir / "checkpoints" / "last.ckpt"


def pretrain_variants(cfg: DictConfig) -> dict[str, list[str]]:
    """Pretraining variant -> its overrides: 'full' and each ablation the study asks for."""
    variants = {"full": []}
    for condition in cfg.ablation.conditions:
        if condition == "occupancy_only":
            variants[condition] = [f"experiment={condition}"]
        elif condition.startswith("no_") and condition[3:] in LOSSES:
            variants[condition] = [f"loss.weights.{condition[3:]}=0"]
        else:
            raise ValueError(
                f"ablation.conditions: unknown condition {condition!r}; use occupancy_only "
                f"or no_<loss> with <loss> one of {LOSSES}"
            )
    return variants


def plan(cfg: DictConfig) -> list[Job]:
    """Every run of the study, pretraining first."""
    work, data_dir = Path(cfg.work_dir), Path(cfg.data_dir)  # as given: relative to where the study runs
    pretrain_root, baseline_root = pretrain_dir(cfg), baseline_dir(cfg)
    # Logs, not terminals: no progress bars (both apps name theirs callbacks.progress_bar).
    common = [
        f"paths.data_dir={data_dir}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        *cfg.shared_overrides,
    ]
    jobs = []
    for variant, extra in pretrain_variants(cfg).items():
        run_dir = pretrain_root / variant
        jobs.append(
            Job(
                f"pretrain-{variant}",
                "pretrain",
                run_dir,
                [
                    *common,
                    *cfg.pretrain_overrides,
                    f"trainer.max_steps={cfg.pretrain_steps}",
                    f"seed={cfg.pretrain_seed}",
                    *extra,
                    f"hydra.run.dir={run_dir}",
                ],
                condition=variant,
            )
        )

    def finetune(condition: str, fraction: float, seed: int, protocol: str = "finetune", repeat: int = 0) -> Job:
        tag = (
            f"{condition}-labels{fraction:g}-seed{seed}" if protocol == "finetune" else f"frozen-{condition}-seed{seed}"
        )
        # Repeat 0 is the seed's run as it always was; repeat r trains from seed + 1000 r (detector
        # initialisation, augmentation, sampling order) on the labelled subset seed drew.
        if repeat:
            tag += f"-rep{repeat}"
        seeding = (
            [f"seed={seed}"]
            if not repeat
            else [f"seed={seed + REPEAT_SEED_STRIDE * repeat}", f"data.subset_seed={seed}"]
        )
        source = "full" if condition == "pretrained" else condition
        fresh = condition in ("scratch", "untrained")
        run_dir = (baseline_root if fresh else work) / "finetune" / tag
        pretrained = [] if fresh else [f"model.pretrained={pretrain_root / source}"]
        frozen = ["model.encoder_mode=freeze"] if protocol == "frozen" else []
        return Job(
            f"finetune-{tag}",
            "finetune",
            run_dir,
            [
                *common,
                *cfg.finetune_overrides,
                *cfg.get("recipe", []),
                f"data.label_fraction_mode={cfg.get('label_fraction_mode', 'recordings')}",
                *frozen,
                f"trainer.max_steps={cfg.finetune_steps}",
                f"trainer.val_check_interval={cfg.val_every}",
                f"optim.lr={cfg.finetune_lr}",
                f"data.label_fraction={fraction}",
                *seeding,
                *pretrained,
                "validate_best=false",  # the study tests the best checkpoint once, itself
                f"record.root={run_dir / 'record'}",
                f"hydra.run.dir={run_dir}",
            ],
            condition,
            float(fraction),
            int(seed),
            None if fresh else f"pretrain-{source}",
            evaluate_args=list(cfg.get("evaluate_overrides", [])),
            rescore=tuple(cfg.get("extra_eval_protocols") or ()),
            protocol=protocol,
            repeat=repeat,
        )

    repeats = range(int(cfg.get("finetune_repeats", 1)))
    if not repeats:
        raise ValueError(f"finetune_repeats must be at least 1, got {cfg.finetune_repeats}")
    for fraction in cfg.label_fractions:
        for seed in seeds_for(cfg, fraction):
            for r in repeats:
                jobs += [
                    finetune("scratch", fraction, seed, repeat=r),
                    finetune("pretrained", fraction, seed, repeat=r),
                ]
    frozen = cfg.get("frozen")
    if frozen:
        for seed in frozen.seeds:
            for r in repeats:
                for condition in ("untrained", "pretrained"):
                    jobs.append(finetune(condition, float(frozen.label_fraction), seed, "frozen", r))
    for condition in cfg.ablation.conditions:
        for seed in cfg.ablation.seeds:
            for r in repeats:
                jobs.append(finetune(condition, cfg.ablation.label_fraction, seed, repeat=r))
    probe = cfg.get("probe")
    if probe:
        jobs.append(probe_job(cfg, work, data_dir, jobs))
    return _without_unused_pretraining(jobs)


def _without_unused_pretraining(jobs: list[Job]) -> list[Job]:
    """Drop pretraining runs no planned run starts from (the full method's, in an ablation of
    fine-tuning alone: about 20 min of a core on this machine for nothing). A study of pretraining
    alone keeps them all: there they are the point."""
    if all(j.kind == "pretrain" for j in jobs):
        return jobs
    used = {name for j in jobs for name in j.dependencies}
    return [j for j in jobs if j.kind != "pretrain" or j.name in used]


def pretrain_dir(cfg: DictConfig) -> Path:
    """Where the pretraining runs live: ``work_dir``/pretrain, or ``pretrain_dir`` to fine-tune
    from another study's pretraining (its runs are reused only if made with the same settings)."""
    return Path(cfg.get("pretrain_dir") or Path(cfg.work_dir) / "pretrain")


def baseline_dir(cfg: DictConfig) -> Path:
    """Where the runs that start from no pretraining live (scratch, and the frozen protocol's
    untrained encoder): ``work_dir``, or ``baseline_dir`` to share another study's. Their commands
    do not depend on the pretraining, so a study that changes only the pretraining compares against
    the same baseline runs instead of training them again."""
    return Path(cfg.get("baseline_dir") or cfg.work_dir)


def seeds_for(cfg: DictConfig, fraction: float) -> list[int]:
    """Fine-tuning seeds at a label fraction: ``seeds_full_labels`` at 100 % when given (fewer
    seeds suffice where the subset is the whole set), ``seeds`` otherwise."""
    if float(fraction) == 1.0 and cfg.get("seeds_full_labels") is not None:
        return list(cfg.seeds_full_labels)
    return list(cfg.seeds)


def probe_job(cfg: DictConfig, work: Path, data_dir: Path, jobs: list[Job]) -> Job:
    """The representation probe on the full pretrained teacher, with the untrained and raw-feature
    references, as the ceiling the encoder of scratch fine-tuned on 100 % labels (seed 0), and the
    ablation's pretraining variants, each paired with the full teacher on the same boxes: the
    ablation at the probe costs their pretraining only, and needs no fine-tuning seed."""
    run_dir = work / "probe"
    supervised = next(
        (j for j in jobs if j.condition == "scratch" and j.label_fraction == 1.0 and j.protocol == "finetune"), None
    )
    args = [
        str(pretrain_dir(cfg) / "full"),
        f"--data-root={data_dir / cfg.preset}",
        f"--split={cfg.probe.split}",
        f"--max-windows={cfg.probe.max_windows}",
        "--references",
        f"--json={run_dir / 'probe.json'}",
    ]
    after = []
    if supervised is not None:
        args.append(f"--supervised={supervised.dir / 'checkpoints' / 'best-step=*.ckpt'}")  # the val-chosen one
        after.append(supervised.name)
    variants = [v for v in pretrain_variants(cfg) if v != "full"]
    if variants:
        args += ["--compare", *(str(pretrain_dir(cfg) / v) for v in variants)]
        after += [f"pretrain-{v}" for v in variants]
    return Job(
        "probe",
        "probe",
        run_dir,
        args,
        condition="pretrained",
        needs="pretrain-full",
        protocol="probe",
        after=tuple(after),
    )


def _run_job(job: Job) -> Job:
    job.dir.mkdir(parents=True, exist_ok=True)
    start, reran = time.perf_counter(), False
    with open(job.dir / "study.log", "a") as log:
        for cmd in job.commands():
            if not _is_evaluation(cmd):
                reran = True
                run_config.record_code(job.dir)
                run_config.record_environment(job.dir)
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
            if code != 0:
                raise RuntimeError(f"{job.name}: exit status {code}; see {job.dir / 'study.log'}")
    seconds = job.dir / "study_seconds.txt"
    # A run that only needed a missing evaluation adds it to the time its earlier steps took.
    before = float(seconds.read_text()) if seconds.is_file() and not reran else 0.0
    job.seconds = before + time.perf_counter() - start
    seconds.write_text(f"{job.seconds:.1f}\n")
    job.load_result()
    return job


def run_jobs(jobs: list[Job], parallel: int, ignore_settings=()) -> dict[str, str]:
    """Runs what is not done yet, ``parallel`` at a time, each once the run it starts from is
    done. Returns name -> error for the runs that failed (and those that needed them). A folder
    whose run was made with other settings stops the study before anything runs."""
    changed = {j.dir: c for j in jobs if (c := j.changed_settings(tuple(ignore_settings)))}
    if changed:  # reusing or overwriting them would mix two studies' settings
        first, *others = changed
        more = f"; {len(others)} more: {', '.join(map(str, others))}" if others else ""
        shown = "; ".join(changed[first][:3]) + (f"; +{len(changed[first]) - 3}" if len(changed[first]) > 3 else "")
        raise OutputFolderError(
            first,
            f"holds a run made with other settings ({shown}{more}); choose another work_dir (and out) for "
            "a study with different settings, delete the folders to rerun them, or list in ignore_settings "
            "the settings you know leave those runs unchanged",
        )
    failed: dict[str, str] = {}
    complete, pending = set(), []
    for job in jobs:
        if job.done():
            job.load_result()
            seconds = job.dir / "study_seconds.txt"
            job.seconds = float(seconds.read_text()) if seconds.is_file() else 0.0
            complete.add(job.name)
        else:
            pending.append(job)
    total, finished = len(pending), 0
    print(
        f"evcmae-study: {len(jobs) - total} of {len(jobs)} runs already done; {total} to run, {parallel} at a time",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        running = {}
        while pending or running:
            for job in list(pending):
                if len(running) >= parallel:
                    break
                broken = [n for n in job.dependencies if n in failed]
                if broken:
                    failed[job.name] = f"needs {broken[0]}, which failed"
                    pending.remove(job)
                elif all(n in complete for n in job.dependencies):
                    running[pool.submit(_run_job, job)] = job
                    pending.remove(job)
            if not running:  # what is left waits on runs that are neither done nor running
                failed.update({job.name: f"needs {', '.join(job.dependencies)}, which did not run" for job in pending})
                break
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                job = running.pop(future)
                finished += 1
                try:
                    future.result()
                    complete.add(job.name)
                    print(f"evcmae-study: [{finished}/{total}] {job.name} done in {job.seconds:.0f} s", flush=True)
                except Exception as exc:  # one failed run must not stop the others
                    failed[job.name] = str(exc)
                    print(f"evcmae-study: [{finished}/{total}] {job.name} FAILED: {exc}", flush=True)
    return failed


def latest_csv(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    return found[-1] if found else None


def _seeds_run(finetunes: list[Job]) -> str:
    """The seeds of each protocol and label fraction, as run (not as configured)."""
    seeds: dict[tuple, set] = {}
    for job in finetunes:
        seeds.setdefault((job.protocol, float(job.label_fraction)), set()).add(job.seed)
    return "; ".join(f"{p} {100 * f:g} %: {sorted(s)}" for (p, f), s in sorted(seeds.items())) or "none"


def _number(value, signed: bool = False) -> str:
    return "–" if value is None else (signed_text(value, 3) if signed else f"{value:.3f}")


def pretraining_notes(jobs: list[Job]) -> str:
    """What each pretraining variant ended with: its losses and the teacher's k-NN probe."""
    lines = [
        "## Pretraining runs",
        "",
        "Training losses are averages over the last logged steps. The probe here is the one each "
        "pretraining run makes at its end, on the val windows its data config names "
        "(`data.val_max_windows`), so it sees fewer boxes than the representation probe below: it "
        "classifies val-split objects by k-NN on the teacher's RoI-grid pooled features (BatchNorm "
        "statistics of unmasked windows, leave-one-track-out), against always guessing the most "
        "frequent class.",
        "",
    ]
    rows = []
    for job in jobs:
        if job.kind != "pretrain" or not job.result:
            continue
        r = job.result
        cells = [job.condition, *(_number(r.get(f"train/{k}")) for k in LOSSES)]
        cells += [_number(r.get(k)) for k in ("probe/balanced_acc", "probe/knn_acc", "probe/majority_acc")]
        boxes = r.get("probe/boxes")
        cells += ["–" if boxes is None else f"{boxes:.0f}", f"{job.seconds / 60:.1f}"]
        rows.append(cells)
    header = ["variant", *LOSSES, "probe balanced acc", "probe k-NN acc", "majority acc", "probe boxes", "minutes"]
    return "\n".join(lines) + "\n" + reporting.markdown_table(header, rows, "lr")


def runs_table(finetunes: list[Job]) -> str:
    """Each fine-tuned run: the checkpoint val chose, its val AP and its test AP, so a report
    shows where val and test disagree."""
    if not finetunes:
        return ""
    rows = []
    for job in finetunes:
        tested = job.dir / "eval_test" / "checkpoint.txt"  # the file the test evaluation read
        chosen = re.search(
            r"step=(\d+)", Path(tested.read_text().strip() if tested.is_file() else best_checkpoint(job.dir)).name
        )
        csv = latest_csv(job.dir)
        val = read_curve(csv)["val_AP"][1] if csv else []
        seed = f"{job.seed} (repeat {job.repeat})" if job.repeat else job.seed
        cells = [job.protocol, job.condition, f"{100 * job.label_fraction:g} %", seed, labelled_text(job.dir)]
        cells += [chosen.group(1) if chosen else "last", f"{100 * max(val):.2f}" if val else "–"]
        cells += [
            f"{100 * job.result[k]:.2f}" if job.result.get(k) is not None else "–" for k in ("AP", "AP_class_agnostic")
        ]
        cells.append(f"{job.seconds / 60:.1f}")
        rows.append(cells)
    header = [
        "protocol",
        "condition",
        "labels",
        "seed",
        "labelled recordings (boxes)",
        "chosen step",
        "best val AP",
        "test AP",
        "test AP class-agnostic",
        "minutes",
    ]
    return "\n## Fine-tuning runs\n\n" + reporting.markdown_table(header, rows, "lllllr")


def labelled_text(run_dir: Path) -> str:
    """The labelled training data a fine-tuning run recorded (labelled_subset.json), in a cell:
    ``train_004, train_014 (565)``, or how many recordings when the whole set, and with thinned
    label times how many label frames were kept: ``20 of 20, 40 label frames (539)``."""
    path = Path(run_dir) / "labelled_subset.json"
    if not path.is_file():
        return "–"
    subset = json.loads(path.read_text())
    names = subset["recordings"]
    if subset.get("mode") == "timestamps":
        frames = f", {subset['label_frames']} label frames" if "label_frames" in subset else ""
        return f"{len(names)} of {subset['of_recordings']}{frames} ({subset['boxes']})"
    if len(names) > 3:
        return f"{len(names)} of {subset['of_recordings']} ({subset['boxes']})"
    return f"{', '.join(names)} ({subset['boxes']})"


def probe_table(rows: list[dict]) -> str:
    """The probe's rows as a table (results/probe.json holds the same numbers)."""
    lines = [
        "## Representation probe (val split, k-NN on RoI-grid pooled features)",
        "",
        "| encoder | balanced accuracy [95 % CI] | pretrained − this [95 % CI] | accuracy | macro F1 | boxes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        balanced = _number(r.get("balanced_accuracy")) + interval_text(r.get("balanced_accuracy_ci95"))
        diff = r.get("pretrained_minus_this") or {}
        paired = _number(diff.get("balanced_accuracy"), signed=True) + interval_text(diff.get("ci95"), signed=True)
        cells = [balanced, paired if diff else "–", *(_number(r.get(k)) for k in ("accuracy", "macro_f1"))]
        lines.append(f"| {r['encoder']} | " + " | ".join(cells) + f" | {r.get('boxes', '–')} |")
    tracks = rows[0].get("tracks_per_class") if rows else None
    if tracks:
        lines += ["", f"Tracks per class (class index: tracks voted on): {tracks_text(tracks)}."]
    return "\n".join(lines) + "\n"


def write_results(
    cfg: DictConfig, jobs: list[Job], failed: dict, wall_s: float, argv: list[str], dataset: dict | None = None
) -> dict:
    out = Path(cfg.out)
    configs = out / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "study.yaml").write_text(OmegaConf.to_yaml(cfg))
    copied = {"study.yaml"}
    for job in jobs:
        src = job.dir / ".hydra" / "config.yaml"
        if src.is_file():
            shutil.copyfile(src, configs / f"{job.name}.yaml")
            copied.add(f"{job.name}.yaml")
    for stale in configs.glob("*.yaml"):  # runs of an earlier invocation that this one does not report
        if stale.name not in copied:
            stale.unlink()
    lines = [
        "# The runs evcmae-study made, in order (run from the directory it ran in)",
        "# " + " ".join(["evcmae-study", *map(shlex.quote, argv)]),
    ]
    for job in jobs:
        lines += [f"# {job.name}", *job.shell_lines()]
    (out / "commands.sh").write_text("\n".join(lines) + "\n")

    finetunes = [j for j in jobs if j.kind == "finetune" and j.result]
    runs = [
        {
            "condition": j.condition,
            "protocol": j.protocol,
            "label_fraction": j.label_fraction,
            "seed": j.seed,
            "repeat": j.repeat,
            "metrics": j.result,
        }
        for j in finetunes
    ]
    probe_rows = next((j.result["rows"] for j in jobs if j.kind == "probe" and j.result), None)
    if probe_rows is not None:
        keep = (
            "encoder",
            "balanced_accuracy",
            "balanced_accuracy_ci95",
            "pretrained_minus_this",
            "accuracy",
            "macro_f1",
            "boxes",
            "majority_accuracy",
            "tracks_per_class",
        )
        probe_rows = [{k: r.get(k) for k in keep} for r in probe_rows]
    # Without a probe, an earlier invocation's probe.json is not this report's: removed.
    write_json_or_remove(out / "probe.json", probe_rows)
    logs = {j.name: latest_csv(j.dir) for j in finetunes}
    curves = [
        {
            "protocol": j.protocol,
            "condition": j.condition,
            "label_fraction": j.label_fraction,
            "seed": j.seed,
            "repeat": j.repeat,
            "csv": logs[j.name],
        }
        for j in finetunes
        if logs[j.name]
    ]
    notes = pretraining_notes(jobs)
    if probe_rows is not None:
        notes += "\n" + probe_table(probe_rows)
    notes += runs_table(finetunes)
    notes += flagged_runs_note(finetunes)
    notes += rescored_results(out, runs, finetunes, _eval_protocol(finetunes))
    notes += mixed_environments_note(j.dir for j in jobs if j.result)
    if failed:
        notes += "\n## Failed runs\n\n" + "\n".join(f"- {name}: {why}" for name, why in failed.items()) + "\n"
    meta = {
        "scale": cfg.scale_name,
        "preset": cfg.preset,
        "recordings": _recordings_line(dataset) if dataset else "not recorded",
        "pretrain_steps": cfg.pretrain_steps,
        "finetune_steps": cfg.finetune_steps,
        "finetune_lr": cfg.finetune_lr,
        "pretraining runs": str(pretrain_dir(cfg)),
        "scratch and untrained runs": str(baseline_dir(cfg) / "finetune"),
        "seeds": _seeds_run(finetunes),
        "fine-tuning runs per seed": f"{cfg.get('finetune_repeats', 1)} (a seed's repeats averaged before pairing)",
        "label fraction mode": cfg.get("label_fraction_mode", "recordings"),
        "fine-tuning recipe": " ".join(cfg.get("recipe", [])) or "defaults",
        "checkpoint selection": f"best val/AP, validated every {cfg.val_every} steps",
        "evaluation protocol": _eval_protocol(finetunes) or "– (no fine-tuning runs)",
        "wall time (invocations that ran something, min)": round(wall_s / 60, 1),
        "run time (sum over runs, min)": round(sum(j.seconds for j in jobs) / 60, 1),
        "jobs at once": cfg.jobs,
        "machine": _machine_line(),
        "code": run_config.code_versions_line(j.dir for j in jobs if j.result),
        "packages": run_config.environments_line(j.dir for j in jobs if j.result),
    }
    commands = [
        " ".join(["evcmae-study", *map(shlex.quote, argv)]),
        "# every run's command: commands.sh; every run's composed config: configs/",
    ]
    return write_report(runs, out, curves=curves, commands=commands, notes=notes, meta=meta)


def mixed_environments_note(run_dirs) -> str:
    """A report section naming the environment entries on which the runs differ (empty when they
    agree): training is deterministic on one machine but not across machines or kernel paths
    (results/bn_eps, results/cpu_kernels), so a difference paired across them carries that noise
    as well as the two conditions'."""
    differing = run_config.differing_environment(run_dirs)
    if not differing:
        return ""
    lines = [
        "\n## Runs made on different environments\n",
        "These runs do not share one environment, and fine-tuning does not reproduce across "
        "environments (the same command and seed gave 0.06 to 1.29 val AP at step 149 on four "
        "kernel paths, results/cpu_kernels). A paired difference between runs of different "
        "environments includes that noise.\n",
    ]
    for setting, values in differing.items():
        parts = "; ".join(f"{value}: {', '.join(sorted(names))}" for value, names in values.items())
        lines.append(f"- {setting}: {parts}")
    return "\n".join(lines) + "\n"


def flagged_runs_note(finetunes: list[Job]) -> str:
    """A report section naming the runs whose tested checkpoint evcmae-evaluate flagged for
    near-constant BatchNorm channels (``batchnorm_near_constant`` in eval_test/config.yaml), the
    state of the fine-tuned detectors that collapsed at evaluation (docs/study.md); empty when none
    is flagged. Their rows stay in the tables as they ran: the note says where to look, not what
    to leave out."""
    from evcmae.backbones.batchnorm import near_constant_text  # torch: not at the study's start-up

    lines = []
    for job in finetunes:
        record = job.dir / "eval_test" / "config.yaml"
        if not record.is_file():
            continue
        flagged = OmegaConf.to_container(OmegaConf.load(record)).get("batchnorm_near_constant") or {}
        if flagged:
            test_ap = job.result.get("AP")
            ap = f"; test AP {100 * test_ap:.2f}" if test_ap is not None else ""
            lines.append(f"- {job.name}: {near_constant_text(flagged)}{ap}")
    if not lines:
        return ""
    head = (
        "\n## Runs flagged at evaluation\n\n"
        "In these runs' tested checkpoints a tenth or more of a BatchNorm layer's channels are nearly "
        "constant (running variance + eps below 1.1e-4), as in the fine-tuned detectors that collapsed "
        "at evaluation (docs/study.md). Their rows count as they ran.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def rescored_results(out: Path, runs: list[dict], finetunes: list[Job], protocol: str | None) -> str:
    """The same test checkpoints under every evaluation protocol: ``eval_protocols.json`` (the
    summary rows with an ``eval_protocol`` key) and one table per further protocol, as Markdown."""
    names = sorted({p for j in finetunes for p in j.rescored})
    if not names:
        write_json_or_remove(out / "eval_protocols.json", None)
        return ""
    rows = [{**r, "eval_protocol": protocol} for r in summary_rows(runs)]
    text = ""
    for name in names:
        scored = [
            {**run, "metrics": job.rescored[name]}
            for run, job in zip(runs, finetunes, strict=True)
            if name in job.rescored
        ]
        scored_rows = summary_rows(scored)
        rows += [{**r, "eval_protocol": name} for r in scored_rows]
        text += (
            f"\n## Test scored under eval.protocol={name}\n\nThe checkpoints above, scored again "
            f"(`eval_test_{name}/` in each run folder; all protocols in eval_protocols.json).\n\n"
            + markdown_table(aggregate(scored_rows))
        )
    write_json_or_remove(out / "eval_protocols.json", rows)
    return text


def _eval_protocol(finetunes: list[Job]) -> str | None:
    """The evaluation protocol the runs' configs name (``data.eval.protocol``): the scores differ
    between them, most of all for a detector trained briefly (see docs/study.md)."""
    found = set()
    for job in finetunes:
        src = job.dir / ".hydra" / "config.yaml"
        if src.is_file():
            found.add(str(OmegaConf.select(OmegaConf.load(src), "data.eval.protocol", default=None)))
    return ", ".join(sorted(found)) or None


def _machine_line() -> str:
    m = machine()
    return f"{m['machine']}, {m['cpus']} CPUs, Python {m['python']}"


def prepare_data(cfg: DictConfig) -> dict:
    """Generate the synthetic dataset once, before runs that would otherwise race to create it, and
    return what it is (``work_dir/dataset.json``). A work_dir whose runs used another version of
    it (the study preset's val and test splits grew from 4 to 16 recordings) is refused: its
    results would be reused as if they came from this one."""
    from evcmae.events.synth import ensure_generated

    root = Path(cfg.data_dir).absolute() / cfg.preset
    ensure_generated(root, cfg.preset, 0, int(cfg.synth_workers))
    synth = json.loads((root / "synth.json").read_text())
    dataset = {
        "preset": synth["preset"],
        "seed": synth["seed"],
        "recordings": {split: totals["recordings"] for split, totals in synth["totals"].items()},
        "parameters": synth["parameters"],
    }
    folders = list(dict.fromkeys([Path(cfg.work_dir), baseline_dir(cfg)]))  # baseline_dir's runs are reused too
    for folder in folders:
        _check_dataset(folder, dataset)
    for folder in folders:
        path = folder / "dataset.json"
        # One that exists was just checked equal; rewriting it raced with other studies reading it.
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _write_by_rename(path, json.dumps(dataset, indent=2) + "\n")
    return dataset


def _write_by_rename(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: studies sharing a baseline_dir read it concurrently."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_dataset(folder: Path, dataset: dict) -> None:
    """Refuse ``folder`` if its ``dataset.json`` names another dataset than this study's."""
    from evcmae.events.synth.writer import changed_parameters

    path = folder / "dataset.json"
    if path.is_file():
        try:
            used = json.loads(path.read_text())
        except ValueError:
            raise OutputFolderError(
                path, "cannot be read as JSON; delete it only if the runs beside it used this data"
            ) from None
        if used != dataset:
            changed = changed_parameters(dataset["parameters"], used.get("parameters", {}))
            raise OutputFolderError(
                folder,
                f"its runs used another version of the '{dataset['preset']}' dataset (changed: {', '.join(changed) or 'seed'}; "
                f"see {path.name}); choose another work_dir (and out), or delete the folder to rerun",
            )


def _recordings_line(dataset: dict) -> str:
    counts = dataset["recordings"]
    return " / ".join(f"{counts.get(split, 0)} {split}" for split in ("pretrain", "train", "val", "test"))


def _add_wall_time(cfg: DictConfig, seconds: float) -> float:
    """Wall time summed over every invocation of this study (a resumed study reports its total)."""
    path = Path(cfg.work_dir) / "study_time.json"
    total = (json.loads(path.read_text())["wall_s"] if path.is_file() else 0.0) + seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wall_s": round(total, 1)}) + "\n")
    return total


def run(cfg: DictConfig, argv: list[str] = ()) -> dict:
    if cfg.get("refresh_notes"):
        readme = refresh_hand_notes(cfg.out)
        print(f"evcmae-study: carried {Path(cfg.out) / HAND_NOTES} into {readme} (no run started)")
        return {"report": None, "failed": {}}
    start = time.perf_counter()
    dataset = prepare_data(cfg)
    jobs = plan(cfg)
    to_run = sum(not job.done() for job in jobs)
    failed = run_jobs(jobs, int(cfg.jobs), cfg.get("ignore_settings") or ())
    # An invocation that found every run done only rewrote the report; its minutes are not the study's.
    wall_s = _add_wall_time(cfg, time.perf_counter() - start if to_run else 0.0)
    report = write_results(cfg, jobs, failed, wall_s, list(argv), dataset)
    if report["groups"]:
        print(markdown_table(report["groups"]))
    print(f"evcmae-study: results in {Path(cfg.out).absolute()} ({(time.perf_counter() - start) / 60:.1f} min)")
    if failed:
        print(f"evcmae-study: {len(failed)} runs failed: {', '.join(failed)}")
    return {"report": report, "failed": failed}


@entry("evcmae-study")
@hydra.main(version_base="1.3", config_path=config_dir("study"), config_name="study")
def _hydra_main(cfg: DictConfig) -> None:
    result = run(cfg, sys.argv[1:])
    if result["failed"]:
        sys.exit(1)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
