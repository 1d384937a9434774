"""evcmae-study: the plan (which runs, with which settings), the scale configs, resuming, failure
handling, and one small study end to end."""

import json
import os
import platform
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from evcmae.events.errors import OutputFolderError
from evcmae.tools import run_config, study
from evcmae.tools.cli import user_error
from evcmae.tools.pretrain import config_dir

RUN_KEYS = ("hydra.run.dir=", "record.root=")


def study_config(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("study"), version_base="1.3"):
        return compose(config_name="study", overrides=list(overrides))


def without(overrides, prefixes):
    return [o for o in overrides if not o.startswith(prefixes)]


def test_plan_has_every_condition_seed_and_fraction():
    cfg = study_config()
    jobs = study.plan(cfg)
    pretrain = [j for j in jobs if j.kind == "pretrain"]
    finetune = [j for j in jobs if j.kind == "finetune"]
    assert [j.condition for j in pretrain] == ["full", *cfg.ablation.conditions]
    assert jobs[: len(pretrain)] == pretrain  # pretraining first: fine-tuning waits for it
    expected = {
        (c, f, s, "finetune")
        for c in ("scratch", "pretrained")
        for f in cfg.label_fractions
        for s in study.seeds_for(cfg, f)
    }
    expected |= {
        (c, cfg.ablation.label_fraction, s, "finetune") for c in cfg.ablation.conditions for s in cfg.ablation.seeds
    }
    expected |= {
        (c, cfg.frozen.label_fraction, s, "frozen") for c in ("untrained", "pretrained") for s in cfg.frozen.seeds
    }
    assert {(j.condition, j.label_fraction, j.seed, j.protocol) for j in finetune} == expected
    assert len(finetune) == len(expected)
    # at least 4 seeds at 10 % labels and 2 at 100 %
    assert len(study.seeds_for(cfg, 0.1)) >= 4 and len(study.seeds_for(cfg, 1.0)) >= 2
    # the probe runs on the full teacher and waits for its supervised reference
    probe = [j for j in jobs if j.kind == "probe"]
    assert len(probe) == 1 and probe[0].needs == "pretrain-full"
    variants = [f"pretrain-{c}" for c in cfg.ablation.conditions]
    assert probe[0].after == ("finetune-scratch-labels1-seed0", *variants)
    # ... and pairs every ablation variant with the full teacher on the same boxes
    compare = probe[0].overrides[probe[0].overrides.index("--compare") + 1 :]
    assert compare == [str(j.dir) for j in pretrain[1:]]
    frozen = [j for j in finetune if j.protocol == "frozen"]
    assert all("model.encoder_mode=freeze" in j.overrides for j in frozen)
    assert all((j.needs is None) == (j.condition == "untrained") for j in frozen)
    assert len({j.dir for j in jobs}) == len(jobs)


def test_ablation_at_the_probe_alone():
    """ablation.seeds=[]: the variants are pretrained and probed, none is fine-tuned; without
    ablation conditions the probe compares nothing."""
    cfg = study_config(
        "label_fractions=[]", "frozen.seeds=[]", "ablation.seeds=[]", "ablation.conditions=[no_occupancy]"
    )
    jobs = study.plan(cfg)
    assert [j.name for j in jobs] == ["pretrain-full", "pretrain-no_occupancy", "probe"]
    probe = jobs[-1]
    assert probe.overrides[-2:] == ["--compare", str(jobs[1].dir)]
    assert probe.dependencies == ("pretrain-full", "pretrain-no_occupancy")
    alone = study.plan(study_config("label_fractions=[]", "frozen.seeds=[]", "ablation.conditions=[]"))
    assert [j.name for j in alone] == ["pretrain-full", "probe"]
    assert "--compare" not in alone[-1].overrides and alone[-1].dependencies == ("pretrain-full",)


def test_pretraining_no_run_starts_from_is_not_planned():
    """An ablation at fine-tuning level alone never uses the full method's teacher; a study of
    pretraining alone keeps every pretraining run."""
    ablation = ["label_fractions=[]", "frozen.seeds=[]", "probe=null", "ablation.conditions=[no_occupancy]"]
    jobs = study.plan(study_config(*ablation, "ablation.seeds=[0]"))
    assert [j.name for j in jobs] == ["pretrain-no_occupancy", "finetune-no_occupancy-labels0.1-seed0"]
    assert jobs[1].needs == "pretrain-no_occupancy"
    pretraining_alone = study.plan(study_config(*ablation, "ablation.seeds=[]"))
    assert [j.name for j in pretraining_alone] == ["pretrain-full", "pretrain-no_occupancy"]


def test_pretrained_and_scratch_runs_differ_only_in_the_starting_weights():
    jobs = {j.name: j for j in study.plan(study_config("seeds=[3]"))}
    scratch = jobs["finetune-scratch-labels0.1-seed3"]
    pretrained = jobs["finetune-pretrained-labels0.1-seed3"]
    ablated = jobs["finetune-no_voxel_nce-labels0.1-seed3"]
    assert scratch.needs is None and pretrained.needs == "pretrain-full"
    assert ablated.needs == "pretrain-no_voxel_nce"
    for job in (pretrained, ablated):
        extra = set(without(job.overrides, RUN_KEYS)) - set(without(scratch.overrides, RUN_KEYS))
        assert extra == {f"model.pretrained={Path(jobs[job.needs].dir)}"}
        assert set(without(scratch.overrides, RUN_KEYS)) <= set(job.overrides)
    assert "data.label_fraction=0.1" in scratch.overrides and "seed=3" in scratch.overrides


def test_repeats_keep_each_seeds_subset_and_change_its_training_seed():
    one = {j.name: j for j in study.plan(study_config("seeds=[3]", "seeds_full_labels=[0]"))}
    two = {j.name: j for j in study.plan(study_config("seeds=[3]", "seeds_full_labels=[0]", "finetune_repeats=2"))}
    repeated = {n for n in two if n.endswith("-rep1")}
    assert {n.removesuffix("-rep1") for n in repeated} == {n for n, j in one.items() if j.kind == "finetune"}
    for name, job in one.items():
        # repeat 0 is the run a study without repeats makes, so its folder is reused as it is
        assert two[name].overrides == job.overrides and two[name].repeat == 0
    rep = two["finetune-scratch-labels0.1-seed3-rep1"]
    assert rep.seed == 3 and rep.repeat == 1 and rep.dir.name == "scratch-labels0.1-seed3-rep1"
    base = set(without(one["finetune-scratch-labels0.1-seed3"].overrides, RUN_KEYS))
    assert set(without(rep.overrides, RUN_KEYS)) ^ base == {"seed=3", "seed=1003", "data.subset_seed=3"}
    frozen = two["finetune-frozen-pretrained-seed0-rep1"]
    assert "seed=1000" in frozen.overrides and frozen.needs == "pretrain-full"
    with pytest.raises(ValueError, match="finetune_repeats"):
        study.plan(study_config("finetune_repeats=0"))


def test_ablation_variants_switch_off_one_loss_each():
    variants = study.pretrain_variants(study_config())
    assert variants["full"] == []
    for loss in study.LOSSES:
        assert variants[f"no_{loss}"] == [f"loss.weights.{loss}=0"]
    assert variants["occupancy_only"] == ["experiment=occupancy_only"]
    assert "no_rvt_stages" in variants  # the encoder pretrained alone
    with pytest.raises(ValueError, match="no_colour"):
        study.pretrain_variants(study_config("ablation.conditions=[no_colour]"))


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_planned_run_composes(scale):
    """Each run's overrides compose against the pretraining / fine-tuning configs (a typo in a
    scale file fails here, not an hour into the study), and the ablations set what they say."""
    jobs = study.plan(study_config(f"scale={scale}"))
    for job in jobs:
        if job.kind == "probe":  # argparse arguments, not Hydra overrides (test_probe_cli runs them)
            assert "--references" in job.overrides and any(o.startswith("--supervised=") for o in job.overrides)
            continue
        overrides = without(job.overrides, ("hydra.",))
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(job.kind), version_base="1.3"):
            cfg = compose(config_name=job.kind, overrides=overrides)
            if job.kind == "pretrain":
                weights = OmegaConf.to_container(cfg.loss.weights)
                if job.condition == "full":
                    assert all(w > 0 for w in weights.values())
                elif job.condition == "occupancy_only":
                    assert weights == {
                        "occupancy": 1.0,
                        "reconstruction": 0.0,
                        "voxel_nce": 0.0,
                        "frame_contrastive": 0.0,
                        "rvt_stages": 0.0,
                    }
                    assert cfg.masking.strategy == "random"
                else:
                    off = job.condition[3:]
                    assert weights[off] == 0 and all(w > 0 for k, w in weights.items() if k != off)
            else:
                assert cfg.data.label_fraction == job.label_fraction and cfg.seed == job.seed


def test_test_evaluations_name_the_checkpoint_fine_tuning_chose(tmp_path):
    """The evaluation commands are built after fine-tuning has run, so they test its best-val
    checkpoint, not last.ckpt; steps whose result exists are not run again."""
    job = study.Job("f", "finetune", tmp_path / "f", ["seed=0"], rescore=("yolox",))
    commands = job.commands()
    assert next(commands)[1:] == ["-m", "evcmae.tools.finetune", "seed=0"]
    checkpoints = tmp_path / "f" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("best-step=300.ckpt", "last.ckpt"):  # what fine-tuning leaves when val peaked early
        (checkpoints / name).write_text("")
    best = f"checkpoint={checkpoints / 'best-step=300.ckpt'}"
    assert next(commands)[2:] == ["evcmae.tools.evaluate", best, "split=test", f"out={tmp_path / 'f' / 'eval_test'}"]
    assert next(commands)[2:] == [
        "evcmae.tools.evaluate",
        best,
        "split=test",
        "eval.protocol=yolox",
        f"out={tmp_path / 'f' / 'eval_test_yolox'}",
    ]
    assert next(commands, None) is None

    # Tested under the run's protocol already: only the missing protocol runs.
    (tmp_path / "f" / "eval_test").mkdir()
    (tmp_path / "f" / "eval_test" / "metrics.json").write_text("{}")
    assert not job.done()
    assert [c[5] for c in job.commands()] == ["eval.protocol=yolox"]
    # commands.sh shows the pattern evcmae-evaluate expands to the one best checkpoint.
    assert "'checkpoint=" + str(checkpoints / "best-step=*.ckpt") + "'" in job.shell_lines()[1]


def test_recorded_overrides_skip_evaluations(tmp_path):
    """A run made outside the study and only evaluated by it is compared on its own command."""
    job = study.Job("f", "finetune", tmp_path, ["seed=1"])
    log = tmp_path / "study.log"
    log.write_text("$ python -m evcmae.tools.evaluate checkpoint=x split=test\n")
    assert job.recorded_overrides() is None
    log.write_text("$ python -m evcmae.tools.finetune seed=2\n$ python -m evcmae.tools.evaluate checkpoint=x\n")
    assert job.recorded_overrides() == ["seed=2"]


def _record(run_dir: Path, app: str, overrides: list, **changes) -> None:
    """A run folder as Hydra leaves it: the composed config, with ``changes`` (dotted key -> value)
    standing for a default that has changed since."""
    cfg = OmegaConf.create(run_config.compose_app(app, overrides))
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def test_a_changed_default_makes_a_run_folder_stale(tmp_path):
    """The override lists agree, but the recorded run was composed under another default: the
    study names the setting and refuses the folder, unless that setting is declared harmless."""
    job = study.Job("pretrain-full", "pretrain", tmp_path / "full", ["seed=0", f"hydra.run.dir={tmp_path}/full"])
    assert job.changed_settings() == []  # nothing recorded yet
    default = run_config.compose_app("pretrain", job.overrides)["loss"]["weights"]["voxel_nce"]
    _record(job.dir, "pretrain", job.overrides, **{"loss.weights.voxel_nce": default + 1})
    assert job.changed_settings() == [f"loss.weights.voxel_nce: {default + 1} -> {default}"]
    assert job.changed_settings(("loss.weights.voxel",)) == []  # a prefix of the key
    with pytest.raises(OutputFolderError, match=r"full: holds a run made with other settings \(loss.weights.voxel_nce"):
        study.run_jobs([job], parallel=1)
    # a setting only one side has (an option added since) counts too
    fresh = study.Job("f", "finetune", tmp_path / "f", ["seed=1"])
    _record(fresh.dir, "finetune", ["seed=1"], **{"model.new_option": 3})
    assert fresh.changed_settings() == ["model.new_option: 3 -> (absent)"]


def test_run_folders_may_move_but_not_change_what_they_start_from(tmp_path):
    """Where the study put a run and which run it starts from are not settings of the run (that
    run is compared on its own): a copied folder is still reused. Starting from nothing is."""
    recorded = ["seed=0", "model.pretrained=outputs/a/pretrain/full", "record.root=outputs/a/finetune/p/record"]
    moved = ["seed=0", "model.pretrained=outputs/b/pretrain/full", "record.root=outputs/b/finetune/p/record"]
    job = study.Job("finetune-p", "finetune", tmp_path / "p", moved)
    _record(job.dir, "finetune", recorded)
    assert job.changed_settings() == []
    scratch = study.Job("finetune-s", "finetune", tmp_path / "s", ["seed=0"])
    _record(scratch.dir, "finetune", recorded)
    assert scratch.changed_settings() == [f"model.pretrained: {run_config._ELSEWHERE} -> None"]


def test_code_version_is_the_commit_and_says_when_it_is_not(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    outside = tmp_path / "installed"
    outside.mkdir()
    assert run_config.code_version(outside).startswith("evcmae ")  # no checkout: the package version
    git("init", "-q")
    (tmp_path / "f.py").write_text("a = 1\n")
    git("add", "f.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert run_config.code_version(tmp_path) == head.stdout.strip()
    (tmp_path / "f.py").write_text("a = 2\n")  # an uncommitted change to a tracked file, mid-study
    assert run_config.code_version(tmp_path) == head.stdout.strip() + "-dirty"


def test_environments_line_groups_runs_by_their_package_versions(tmp_path):
    envs = {"a": {"python": "3.11.7", "numpy": "2.4.6"}, "b": {"python": "3.11.7", "numpy": "2.4.6"}}
    envs["c"] = {"python": "3.11.7", "numpy": "2.3.0"}  # a later fresh install brought another numpy
    for name, env in envs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / run_config.ENV_FILE).write_text(json.dumps(env))
    (tmp_path / "d").mkdir()  # a run from before environments were recorded
    line = run_config.environments_line(tmp_path / n for n in "abcd")
    assert line == ("python 3.11.7, numpy 2.4.6 (2 runs), python 3.11.7, numpy 2.3.0 (1 run), not recorded (1 run)")


def test_report_names_the_environment_entries_runs_differ_on(tmp_path):
    base = {"python": "3.11.7", "torch": "2.13.0+cpu", "torch CPU kernels": "AVX512"}
    envs = {"finetune/scratch-seed0": base, "finetune/pretrained-seed0": base}
    envs["finetune/scratch-seed1"] = {**base, "torch CPU kernels": "AVX2"}
    envs["finetune/pretrained-seed1"] = {**base, "ONEDNN_MAX_CPU_ISA": "AVX2"}  # a cap set on one run only
    envs["pretrain/scratch-seed0"] = base  # the same name in another folder stays a run of its own
    for name, env in envs.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / run_config.ENV_FILE).write_text(json.dumps(env))
    (tmp_path / "finetune" / "old").mkdir()  # recorded nothing: unknown, not a difference
    dirs = [tmp_path / n for n in [*envs, "finetune/old"]]
    same = ["finetune/scratch-seed0", "finetune/pretrained-seed0", "pretrain/scratch-seed0"]
    assert run_config.differing_environment(dirs) == {
        "ONEDNN_MAX_CPU_ISA": {
            "not set": [*same[:2], "finetune/scratch-seed1", same[2]],
            "AVX2": ["finetune/pretrained-seed1"],
        },
        "torch CPU kernels": {
            "AVX512": [*same[:2], "finetune/pretrained-seed1", same[2]],
            "AVX2": ["finetune/scratch-seed1"],
        },
    }
    note = study.mixed_environments_note(dirs)
    assert (
        "- torch CPU kernels: AVX512: finetune/pretrained-seed0, finetune/pretrained-seed1, "
        "finetune/scratch-seed0, pretrain/scratch-seed0; AVX2: finetune/scratch-seed1"
    ) in note
    assert "- ONEDNN_MAX_CPU_ISA: not set: " in note and note.count("\n- ") == 2
    agreeing = [tmp_path / n for n in [*same, "finetune/old"]]
    assert run_config.differing_environment(agreeing) == {} and study.mixed_environments_note(agreeing) == ""


def test_package_versions_names_the_installed_numeric_packages():
    import numpy

    found = run_config.package_versions()
    assert found["numpy"] == numpy.__version__ and "evcmae" not in found and "pytest" not in found
    assert next(iter(found)) == "python"  # then the packages, by name


def test_environment_records_the_kernel_caps_that_are_set(monkeypatch):
    for name in run_config.KERNEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    plain = run_config.environment()
    assert not set(run_config.KERNEL_SETTINGS) & set(plain)  # none set, none recorded
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "")  # set but empty: no cap
    capped = run_config.environment()
    assert capped == {**plain, "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_composing_a_runs_config_leaves_a_running_hydra_app_alone():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("study"), version_base="1.3"):
        composed = run_config.compose_app("pretrain", ["seed=5", "hydra.run.dir=x"])
        assert composed["seed"] == 5 and "hydra" not in composed
        assert compose(config_name="study").jobs >= 1  # the study's own config is still the one composed
    with pytest.raises(ValueError, match="probe"):
        run_config.compose_app("probe", [])


def test_pretrain_dir_points_every_run_at_another_studys_pretraining():
    cfg = study_config("work_dir=outputs/b", "pretrain_dir=outputs/a/pretrain")
    jobs = {j.name: j for j in study.plan(cfg)}
    assert jobs["pretrain-full"].dir == Path("outputs/a/pretrain/full")
    assert "hydra.run.dir=outputs/a/pretrain/full" in jobs["pretrain-full"].overrides
    assert "model.pretrained=outputs/a/pretrain/full" in jobs["finetune-pretrained-labels0.1-seed0"].overrides
    assert jobs["finetune-pretrained-labels0.1-seed0"].dir == Path("outputs/b/finetune/pretrained-labels0.1-seed0")
    assert jobs["probe"].overrides[0] == "outputs/a/pretrain/full"
    default = {j.name: j for j in study.plan(study_config("work_dir=outputs/b"))}
    assert default["pretrain-full"].dir == Path("outputs/b/pretrain/full")


def test_baseline_dir_shares_another_studys_runs_without_pretraining():
    """A study that changes only the pretraining reuses the other study's scratch and
    untrained-frozen runs: the same folders and the same commands, so they count as done there."""
    cfg = study_config("work_dir=outputs/b", "baseline_dir=outputs/a", "pretrain_steps=2400")
    jobs = {j.name: j for j in study.plan(cfg)}
    other = {j.name: j for j in study.plan(study_config("work_dir=outputs/a"))}
    shared = [n for n, j in jobs.items() if j.kind == "finetune" and j.condition in ("scratch", "untrained")]
    assert len(shared) == len(cfg.seeds) + len(cfg.seeds_full_labels) + len(cfg.frozen.seeds)  # scratch, untrained
    for name in shared:
        assert jobs[name].dir == other[name].dir and jobs[name].dir.parts[:2] == ("outputs", "a")
        assert jobs[name].overrides == other[name].overrides
    for name, job in jobs.items():  # everything that starts from this study's pretraining stays here
        if name not in shared:
            assert job.dir.parts[:2] == ("outputs", "b"), name
            assert job.overrides != other[name].overrides, name
    default = {j.name: j for j in study.plan(study_config("work_dir=outputs/b"))}
    assert default["finetune-scratch-labels0.1-seed0"].dir == Path("outputs/b/finetune/scratch-labels0.1-seed0")


class FakeJob(study.Job):
    """A job whose 'run' is a tiny Python command writing the result file (or failing)."""

    def commands(self):
        name = "final_metrics.json" if self.kind == "pretrain" else "eval_test/metrics.json"
        target = self.dir / name
        if self.condition == "broken":
            return [[sys.executable, "-c", "import sys; sys.exit(3)"]]
        code = (
            f"import pathlib; p = pathlib.Path({str(target)!r}); p.parent.mkdir(parents=True, exist_ok=True); "
            f"p.write_text('{{\"AP\": 0.5}}')"
        )
        if self.kind == "pretrain":
            code += f"; pathlib.Path({str(self.dir / 'teacher_backbone.pt')!r}).write_text('w')"
        return [[sys.executable, "-c", code]]


def test_run_jobs_skips_done_runs_and_propagates_failures(tmp_path):
    def job(name, kind, condition="", needs=None):
        return FakeJob(name, kind, tmp_path / name, [], condition=condition, needs=needs)

    jobs = [
        job("p-ok", "pretrain", "ok"),
        job("p-bad", "pretrain", "broken"),
        job("f-ok", "finetune", needs="p-ok"),
        job("f-bad", "finetune", needs="p-bad"),
        job("f-scratch", "finetune"),
    ]
    failed = study.run_jobs(jobs, parallel=2)
    assert set(failed) == {"p-bad", "f-bad"}
    assert "exit status 3" in failed["p-bad"] and "p-bad" in failed["f-bad"]
    assert (tmp_path / "p-bad" / "study.log").is_file()
    assert jobs[2].result == {"AP": 0.5} and jobs[4].result == {"AP": 0.5}
    # each run folder records the code it was made with, and the report counts them
    assert run_config.recorded_code(tmp_path / "f-ok") == run_config.code_version()
    made = [j.dir for j in jobs if j.result]
    assert (
        run_config.code_versions_line([*made, tmp_path])
        == f"{run_config.code_version()} (3 runs), not recorded (1 run)"
    )
    # ... and the packages it ran on, torch among them, at the version this process imported
    import torch

    env = run_config.recorded_environment(tmp_path / "f-ok")
    assert env["torch"] == torch.__version__ and env["python"] == platform.python_version()
    assert env["torch CPU kernels"] == torch.backends.cpu.get_cpu_capability()

    # Rerun: the finished runs are loaded, not run again (their commands would now fail).
    again = [job("p-ok", "pretrain", "broken"), job("f-ok", "finetune", "broken", needs="p-ok")]
    assert study.run_jobs(again, parallel=1) == {}
    assert again[1].result == {"AP": 0.5}

    # A folder made with other settings is neither reused nor overwritten.
    other = FakeJob("f-ok", "finetune", tmp_path / "f-ok", ["optim.lr=0.1"])
    with pytest.raises(OutputFolderError, match="f-ok: holds a run made with other settings") as err:
        study.run_jobs([other], parallel=1)
    assert user_error(err.value) is err.value  # the command reports it as one line, no traceback


@pytest.mark.slow
def test_small_study_end_to_end(tmp_path, synth_tiny, monkeypatch):
    """A few steps of each stage on the tiny preset: every stage hands over to the next and the
    report lists every run; a second call finds them all done."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiny").symlink_to(synth_tiny, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    settings = (
        "preset=tiny",
        "pretrain_overrides=['data=tiny']",
        "finetune_overrides=['data=tiny']",
        "pretrain_steps=2",
        "finetune_steps=2",
        "val_every=2",
        "seeds=[0]",
        "seeds_full_labels=[0]",
        "frozen.seeds=[0]",
        "probe.max_windows=8",
        "label_fractions=[1.0]",
        "ablation.label_fraction=1.0",
        "ablation.conditions=[occupancy_only]",
        "out=results",
        "work_dir=work",
        f"data_dir={data}",
    )
    cfg = study_config(*settings)
    result = study.run(cfg, ["preset=tiny"])
    assert result["failed"] == {}
    rows = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert {(r["protocol"], r["condition"], r["label_fraction"], r["seed"]) for r in rows} == {
        ("finetune", "scratch", 1.0, 0),
        ("finetune", "pretrained", 1.0, 0),
        ("finetune", "occupancy_only", 1.0, 0),
        ("frozen", "untrained", 1.0, 0),
        ("frozen", "pretrained", 1.0, 0),
    }
    probe = json.loads((tmp_path / "results" / "probe.json").read_text())
    # the references, then the ablation variant, each paired with the full teacher on the same boxes
    assert [r["encoder"] for r in probe] == ["pretrained", "untrained", "raw_features", "supervised", "occupancy_only"]
    assert probe[0]["pretrained_minus_this"] is None and all(r["pretrained_minus_this"] for r in probe[1:])
    assert len({r["boxes"] for r in probe}) == 1
    assert all(0 <= r["balanced_accuracy"] <= 1 for r in probe)
    assert all(r["tracks_per_class"] and min(r["tracks_per_class"].values()) >= 1 for r in probe)
    for row in rows:
        assert row["split"] == "test" and set(row) >= {"AP", "AP50"}
        assert row["AP"] is None or 0.0 <= row["AP"] <= 1.0
    report = (tmp_path / "results" / "README.md").read_text()
    assert "| finetune | occupancy_only | 100 % |" in report and "## Pretraining runs" in report
    assert "| frozen | pretrained | 100 % |" in report and "## Representation probe" in report
    assert "| occupancy_only | " in report.split("## Representation probe")[1]
    assert "Tracks per class (class index: tracks voted on): " in report
    assert "- evaluation protocol: rvt\n" in report  # every run's data.eval.protocol, the default
    assert "- seeds: finetune 100 %: [0]; frozen 100 %: [0]\n" in report  # as run
    assert "- recordings: 2 pretrain / 2 train / 1 val / 1 test\n" in report  # tiny's synth.json
    for name in (
        "ap_vs_label_fraction.png",
        "finetune_curves.png",
        "val_curves.json",
        "commands.sh",
        "configs/study.yaml",
        "configs/pretrain-full.yaml",
        "configs/finetune-scratch-labels1-seed0.yaml",
    ):
        assert (tmp_path / "results" / name).is_file(), name
    assert "model.pretrained=work/pretrain/full" in (tmp_path / "results" / "commands.sh").read_text()
    # The evaluations used the checkpoint chosen on val, and the test split, under both protocols.
    run = tmp_path / "work" / "finetune" / "pretrained-labels1-seed0"
    evaluations = [line for line in (run / "study.log").read_text().splitlines() if "evcmae.tools.evaluate" in line]
    assert len(evaluations) == 2 and all("checkpoints/best-step=2.ckpt split=test" in e for e in evaluations)
    scored = json.loads((tmp_path / "results" / "eval_protocols.json").read_text())
    assert sorted((r["eval_protocol"], r["condition"], r["protocol"]) for r in scored) == sorted(
        (p, r["condition"], r["protocol"]) for p in ("rvt", "yolox") for r in rows
    )
    yolox = json.loads((run / "eval_test_yolox" / "metrics.json").read_text())
    assert (
        next(
            r
            for r in scored
            if r["eval_protocol"] == "yolox" and r["condition"] == "pretrained" and r["protocol"] == "finetune"
        )["AP"]
        == yolox["AP"]
    )
    assert "## Test scored under eval.protocol=yolox" in report
    # the runs table names the labelled recordings each run recorded, and the checkpoint val chose
    subset = json.loads((tmp_path / "work" / "finetune" / "scratch-labels1-seed0" / "labelled_subset.json").read_text())
    # the study takes label fractions as thinned label times (its default): the cell counts
    # recordings and the label frames kept
    assert subset["mode"] == "timestamps"
    kept = f"{subset['label_frames']} label frames ({subset['boxes']})"
    labelled = f"{len(subset['recordings'])} of {subset['of_recordings']}, {kept}"
    assert f"| finetune | scratch | 100 % | 0 | {labelled} | 2 |" in report
    assert len(subset["recordings"]) == subset["of_recordings"] == 2  # 100 %: the whole train split

    wall = (tmp_path / "work" / "study_time.json").read_text()
    again = study.run(cfg, ["preset=tiny"])
    assert again["failed"] == {}
    assert json.loads((tmp_path / "results" / "summary.json").read_text()) == rows
    assert (tmp_path / "work" / "study_time.json").read_text() == wall  # nothing ran: no minutes added

    # The same folder reused by a study of pretraining alone: nothing of the first report stays
    # beside it that this one did not make.
    bare = study_config(*settings, "label_fractions=[]", "frozen.seeds=[]", "ablation.conditions=[]", "probe=null")
    assert study.run(bare, ["preset=tiny"])["failed"] == {}
    assert json.loads((tmp_path / "results" / "summary.json").read_text()) == []
    for name in (
        "ap_vs_label_fraction.png",
        "finetune_curves.png",
        "val_curves.json",
        "probe.json",
        "eval_protocols.json",
    ):
        assert not (tmp_path / "results" / name).exists(), name
    assert "No fine-tuning runs" in (tmp_path / "results" / "README.md").read_text()
    assert sorted(p.name for p in (tmp_path / "results" / "configs").iterdir()) == [
        "pretrain-full.yaml",
        "study.yaml",
    ]


def test_refresh_notes_runs_nothing_and_rewrites_only_the_notes(tmp_path):
    """``refresh_notes=true`` carries notes.md into the report and starts no run: it neither
    generates data nor creates the work folder."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "README.md").write_text("# generated\n\n## Notes (written by hand, in notes.md)\n\nold\n")
    (out / "notes.md").write_text("new\n")
    cfg = study_config(
        f"out={out}", f"work_dir={tmp_path / 'work'}", f"data_dir={tmp_path / 'data'}", "refresh_notes=true"
    )
    assert study.run(cfg) == {"report": None, "failed": {}}
    assert (out / "README.md").read_text() == "# generated\n\n## Notes (written by hand, in notes.md)\n\nnew\n"
    assert not (tmp_path / "work").exists() and not (tmp_path / "data").exists()


def test_a_work_dir_of_another_dataset_version_is_refused(tmp_path, synth_tiny):
    """Runs made on the study preset before its val and test splits grew would otherwise be
    reused as results on the new data: the same commands, other recordings."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiny").symlink_to(synth_tiny, target_is_directory=True)
    cfg = study_config("preset=tiny", f"data_dir={data}", f"work_dir={tmp_path / 'work'}")
    dataset = study.prepare_data(cfg)
    assert dataset["recordings"] == {"train": 2, "val": 1, "test": 1, "pretrain": 2}
    recorded = tmp_path / "work" / "dataset.json"
    os.utime(recorded, ns=(10**9, 10**9))
    assert study.prepare_data(cfg) == dataset  # the same data again: accepted
    # and its record is left untouched (a rewrite raced with studies sharing it as baseline_dir)
    assert recorded.stat().st_mtime_ns == 10**9
    assert [p.name for p in recorded.parent.iterdir()] == ["dataset.json"]  # no temporary file left
    older = json.loads(recorded.read_text())
    older["parameters"]["recordings"]["val"] = 4
    recorded.write_text(json.dumps(older))
    with pytest.raises(
        OutputFolderError, match=r"work: its runs used another version of the 'tiny' dataset \(changed: recordings;"
    ):
        study.prepare_data(cfg)
    assert json.loads(recorded.read_text()) == older  # kept as it was
    recorded.write_text('{"preset": "ti')
    with pytest.raises(OutputFolderError, match=r"dataset.json: cannot be read as JSON"):
        study.prepare_data(cfg)


def test_a_baseline_dir_of_another_dataset_version_is_refused(tmp_path, synth_tiny):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiny").symlink_to(synth_tiny, target_is_directory=True)
    base = tmp_path / "base"
    dataset = study.prepare_data(study_config("preset=tiny", f"data_dir={data}", f"work_dir={base}"))
    cfg = study_config("preset=tiny", f"data_dir={data}", f"work_dir={tmp_path / 'work'}", f"baseline_dir={base}")
    assert study.prepare_data(cfg) == dataset
    assert json.loads((tmp_path / "work" / "dataset.json").read_text()) == dataset
    (tmp_path / "work" / "dataset.json").unlink()
    older = dict(dataset, seed=dataset["seed"] + 1)
    (base / "dataset.json").write_text(json.dumps(older))
    with pytest.raises(OutputFolderError, match=r"base: its runs used another version of the 'tiny' dataset"):
        study.prepare_data(cfg)
    assert not (tmp_path / "work" / "dataset.json").exists()  # nothing recorded for a refused study
    assert json.loads((base / "dataset.json").read_text()) == older


def test_a_run_resumed_for_an_evaluation_keeps_its_earlier_time(tmp_path):
    class EvaluationOnly(study.Job):
        def commands(self):
            return [[sys.executable, "-m", "evcmae.tools.evaluate", "--help"]]

    (tmp_path / "eval_test").mkdir()
    (tmp_path / "eval_test" / "metrics.json").write_text('{"AP": 0.5}')
    (tmp_path / "study_seconds.txt").write_text("1000.0\n")
    job = study._run_job(EvaluationOnly("f", "finetune", tmp_path, []))
    assert 1000 < job.seconds < 1100
    assert float((tmp_path / "study_seconds.txt").read_text()) == pytest.approx(job.seconds, abs=0.1)
    # A run made again from the start counts only itself.
    again = study._run_job(FakeJob("f", "finetune", tmp_path, []))
    assert again.seconds < 100


def test_pretraining_table_names_how_many_boxes_each_runs_probe_saw(tmp_path):
    """The pretraining runs' own end-of-run probe sees fewer val windows than evcmae-probe, so the
    table says how many boxes each figure rests on (a run without a probe shows a dash)."""
    probed = study.Job("pretrain-full", "pretrain", tmp_path, [], condition="full", seconds=120.0)
    probed.result = {"train/occupancy": 0.5, "probe/balanced_acc": 0.585, "probe/boxes": 464.0}
    unprobed = study.Job("pretrain-x", "pretrain", tmp_path, [], condition="x", seconds=60.0)
    unprobed.result = {"train/occupancy": 0.25}
    table = study.pretraining_notes([probed, unprobed]).splitlines()
    header = next(line for line in table if line.startswith("| variant"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[-2:] == ["probe boxes", "minutes"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in table[-2:]}
    assert rows["full"][-2:] == ["464", "2.0"] and rows["full"][cells.index("probe balanced acc")] == "0.585"
    assert rows["x"][-2:] == ["–", "1.0"]


def test_the_runs_table_names_each_runs_labelled_recordings(tmp_path):
    two = {"recordings": ["train_004", "train_014"], "of_recordings": 20, "boxes": 565, "mode": "recordings"}
    thinned = {"recordings": [f"r{i}" for i in range(20)], "of_recordings": 20, "boxes": 61, "mode": "timestamps"}
    counted = dict(thinned, label_frames=40)
    for name, subset in (("a", two), ("b", thinned), ("c", counted)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "labelled_subset.json").write_text(json.dumps(subset))
    assert study.labelled_text(tmp_path / "a") == "train_004, train_014 (565)"
    assert study.labelled_text(tmp_path / "b") == "20 of 20 (61)"  # recorded before it counted frames
    assert study.labelled_text(tmp_path / "c") == "20 of 20, 40 label frames (61)"
    assert study.labelled_text(tmp_path / "none") == "–"  # a run made before runs recorded it
    job = study.Job("f", "finetune", tmp_path / "a", [], "scratch", 0.1, 0, result={"AP": 0.05})
    row = [line for line in study.runs_table([job]).splitlines() if line.startswith("| finetune")][0]
    assert "| train_004, train_014 (565) |" in row and "| 5.00 |" in row


def test_the_report_names_runs_flagged_for_near_constant_batchnorm(tmp_path):
    flagged = study.Job("finetune-pretrained-10-s7", "finetune", tmp_path / "a", [], result={"AP": 0.0843})
    healthy = study.Job("finetune-scratch-10-s7", "finetune", tmp_path / "b", [], result={"AP": 0.1535})
    untested = study.Job("finetune-scratch-10-s8", "finetune", tmp_path / "c", [])
    for job, found in ((flagged, "{detector.fpn.lateral.1.bn: [109, 128]}"), (healthy, "{}")):
        (job.dir / "eval_test").mkdir(parents=True)
        (job.dir / "eval_test" / "config.yaml").write_text(f"split: test\nbatchnorm_near_constant: {found}\n")
    note = study.flagged_runs_note([flagged, healthy, untested])
    assert note.startswith("\n## Runs flagged at evaluation\n")
    listed = [line for line in note.splitlines() if line.startswith("- ")]
    assert listed == ["- finetune-pretrained-10-s7: detector.fpn.lateral.1.bn (109/128); test AP 8.43"]
    assert study.flagged_runs_note([healthy, untested]) == ""
