"""End to end on the tiny preset: fine-tuning beats an untrained detector under the same
evaluation; evcmae-evaluate writes metrics.json; evcmae-detect writes a loadable box file.

One fine-tuning run (module-scoped) serves all three tests: ~60 steps of L=2 chunks, ~1.5 min on
a 2-core CPU."""

import json

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
STEPS = 60
REQUIRED = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AP_class_agnostic", "AP_per_class")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from evcmae.finetune.records import ExperimentRecord
    from evcmae.tools.demo import _compose
    from evcmae.tools.pretrain import build  # both apps build data, model and trainer alike

    out = tmp_path_factory.mktemp("ft")
    cfg = _compose(
        "finetune",
        [
            "data=tiny",
            f"paths.data_dir={out}/data",
            f"paths.log_dir={out}/logs",
            f"trainer.max_steps={STEPS}",
            f"trainer.val_check_interval={STEPS}",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "data.seq_len=2",
            "optim.lr=0.002",
            "data.augment=null",
            "+trainer.enable_model_summary=false",
        ],
        out / "run",
    )
    datamodule, module, trainer = build(cfg)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    untrained = module.last_metrics
    trainer.fit(module, datamodule=datamodule)
    trained = module.last_metrics  # the validation at the last step (same evaluation)
    record = ExperimentRecord.create(cfg.record.root, config=cfg, name="test")
    record.write_metrics(trained, module.last_confusion)
    return {
        "untrained": untrained,
        "trained": trained,
        "ckpt": next(c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path),
        "out": out,
        "data": datamodule,
        "record": record,
    }


@pytest.mark.slow
def test_finetuning_beats_untrained(finetuned):
    u, t = finetuned["untrained"], finetuned["trained"]
    print(
        f"\nuntrained: AP {u['AP']}, AP50 {u['AP50']}, agnostic {u['AP_class_agnostic']}"
        f"\ntrained ({STEPS} steps): AP {t['AP']}, AP50 {t['AP50']}, agnostic {t['AP_class_agnostic']}"
    )
    assert (t["AP50"] or 0) > (u["AP50"] or 0) + 0.01
    assert (t["AP_class_agnostic"] or 0) > (u["AP_class_agnostic"] or 0) + 0.005
    assert (finetuned["record"].path / "metrics.json").is_file()


@pytest.mark.slow
def test_evaluate_writes_metrics(finetuned, capsys):
    from evcmae.tools.evaluate import main

    out = finetuned["out"] / "eval"
    main([f"checkpoint={finetuned['ckpt']}", "split=test", f"out={out}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(k in metrics for k in REQUIRED)
    assert (out / "summary.txt").is_file() and (out / "confusion_matrix.json").is_file()
    assert "AP_class_agnostic" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_flags_near_constant_batchnorm_and_reestimates_it(finetuned, capsys):
    """A checkpoint whose PAFPN BatchNorm holds near-zero running variances (how one fine-tuned
    detector collapsed) is named in a warning and the record; precise_bn=2 re-estimates it from
    the training data first, and the record says so."""
    import torch
    import yaml

    from evcmae.tools.evaluate import main

    ckpt = torch.load(finetuned["ckpt"], map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.detector.fpn.") and k.endswith("running_var"))
    ckpt["state_dict"][key][:] = 1e-6
    damaged = finetuned["out"] / "damaged.ckpt"
    torch.save(ckpt, damaged)
    layer = key.removeprefix("model.").removesuffix(".running_var")
    channels = ckpt["state_dict"][key].numel()

    assert main([f"checkpoint={damaged}", "split=val", f"out={finetuned['out'] / 'eval_damaged'}"]) == 0
    assert f"{layer} ({channels}/{channels})" in capsys.readouterr().out
    config = yaml.safe_load((finetuned["out"] / "eval_damaged" / "config.yaml").read_text())
    assert config["batchnorm_near_constant"] == {layer: [channels, channels]} and config["precise_bn"] is None

    out = finetuned["out"] / "eval_precise"
    assert main([f"checkpoint={damaged}", "split=val", "precise_bn=2", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "re-estimated on" in printed and "warning" not in printed
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["precise_bn"]["batches"] == 2 and config["precise_bn"]["labelled_windows"] > 0
    assert config["batchnorm_near_constant"] == {}
    assert json.loads((out / "metrics.json").read_text())["AP"] is not None
    bad = main([f"checkpoint={damaged}", "split=val", "precise_bn=1", "precise_bn_scope=head", f"out={out}2"])
    assert bad == 2 and "precise_bn_scope must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_detect_writes_bbox_file(finetuned):
    from evcmae.events.labels import BBOX_DTYPE, load_labels
    from evcmae.tools.detect import main

    td = sorted((finetuned["out"] / "data" / "tiny" / "test").glob("*_td.h5"))[0]
    out = finetuned["out"] / "det" / "rec_bbox.npy"
    main([f"checkpoint={finetuned['ckpt']}", f"input={td}", f"output={out}", "conf=0.01"])
    boxes = load_labels(out)
    assert boxes.dtype == BBOX_DTYPE and len(boxes)
    assert np.all(np.diff(boxes["t"]) >= 0) and np.all(boxes["t"] % 50_000 == 0)
    assert np.all((boxes["class_confidence"] >= 0.01) & (boxes["class_confidence"] <= 1))


@pytest.mark.slow
def test_best_checkpoint_is_validated_as_val(tmp_path, synth_tiny):
    """`evcmae-finetune data=tiny model=histogram` at 2 steps, in this process: the best
    checkpoint's validation is logged as val/* (no test/*), equals the record's metrics, and the
    run's curves are plotted beside its CSV log."""
    import csv
    from pathlib import Path

    from evcmae.tools.demo import _compose
    from evcmae.tools.finetune import train

    run = tmp_path / "run"
    cfg = _compose(
        "finetune",
        [
            "data=tiny",
            "model=histogram",
            f"data.root={synth_tiny}",
            f"data.rvt_root={tmp_path / 'rvt'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "+trainer.enable_model_summary=false",
        ],
        run,
    )
    result = train(cfg)
    with open(run / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    validations = [r for r in rows if r.get("val/AP")]
    assert len(validations) == 2  # at step 2 during fit, then the best checkpoint's
    assert not any(key.startswith("test/") for key in rows[0])
    recorded = json.loads((Path(result["record"]) / "metrics.json").read_text())
    assert float(validations[-1]["val/AP"]) == pytest.approx(recorded["AP"] or 0.0)
    assert result["metrics"]["val/AP"] == pytest.approx(recorded["AP"] or 0.0)
    assert Path(result["checkpoint"]).name == "best-step=2.ckpt"
    assert (run / "csv" / "version_0" / "curves.png").is_file()
