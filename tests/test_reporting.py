"""The one report writer (tables, CSV logs, figures) and the run-watching callbacks: the progress
bar shows the chosen loss, and a fit leaves curves.png beside its metrics.csv."""

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger

from evcmae.pretrain.reporting import markdown_table, plot_csv_log, read_csv_log, text_table
from evcmae.pretrain.watch import CurvesPlot, LossProgressBar

torch.set_num_threads(1)


def test_markdown_table_aligns_and_escapes():
    table = markdown_table(["run", "AP", "note"], [["a", 1.5, "x|y"], ["b", "–", ""]], "lrl")
    assert table == ("| run | AP | note |\n|---|---:|---|\n| a | 1.5 | x\\|y |\n| b | – |  |\n")
    assert markdown_table(["a", "b", "c"], [], "lr").splitlines()[1] == "|---|---:|---:|"  # last letter repeats
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [["only"]])
    with pytest.raises(ValueError, match="'c'"):
        markdown_table(["a"], [], "c")


def test_text_table_pads_columns():
    table = text_table(["metric", "value"], [("AP", "12.34"), ("AP_class_agnostic", "–")], (20, 8), "lr")
    assert table.splitlines() == [
        "metric                 value",
        "AP                     12.34",
        "AP_class_agnostic          –",
    ]


def test_read_csv_log_keeps_numeric_cells_per_column(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/AP,lr\n0,0,2.5,,0.1\n0,1,nan,,0.1\n0,1,,0.25,\n1,3,1.5,,inf\n")
    assert read_csv_log(path) == {
        "train/loss": ([0, 3], [2.5, 1.5]),  # nan and empty cells skipped
        "lr": ([0, 1], [0.1, 0.1]),
        "val/AP": ([1], [0.25]),
    }


def test_plot_csv_log_draws_the_panels_that_match(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train/total,train/occupancy,probe/knn_acc\n0,3.0,1.0,\n1,2.0,0.5,\n1,,,0.7\n")
    png = plot_csv_log(path, tmp_path / "one.png", {"losses": ["train/*"], "probe": ["probe/knn_acc"]})
    assert png == tmp_path / "one.png" and Image.open(png).size == (1320, 480)  # two panels, 5.5 x 4 in each
    single = plot_csv_log(path, tmp_path / "two.png", {"losses": ["train/total"], "absent": ["val/*"]})
    assert Image.open(single).size == (660, 480)  # the panel with nothing to show is left out
    assert plot_csv_log(path, tmp_path / "none.png", {"absent": ["val/*"]}) is None
    assert not (tmp_path / "none.png").exists()


class Regression(pl.LightningModule):
    """Fits y = 2x; logs its loss the way the pretraining module does (no prog_bar flag)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        x = torch.linspace(-1, 1, 8)
        loss = ((self.w * x - 2 * x) ** 2).mean()
        self.log("train/total", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(4), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fit_shows_its_loss_and_leaves_curves_beside_the_csv(tmp_path):
    bar = LossProgressBar(show={"loss": "train/total"})
    curves = CurvesPlot({"training losses": ["train/*"]})
    trainer = pl.Trainer(
        max_steps=3,
        logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[bar, curves],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    module = Regression()
    trainer.fit(module)
    shown = bar.get_metrics(trainer, module)
    # Reference: loss(w) = (w - 2)^2 * mean(x^2), SGD from w = 0 with lr 0.1.
    m, w, expected = float((torch.linspace(-1, 1, 8) ** 2).mean()), 0.0, []
    for _ in range(3):
        expected.append((w - 2) ** 2 * m)
        w -= 0.1 * 2 * (w - 2) * m
    steps, logged = read_csv_log(tmp_path / "csv" / "version_0" / "metrics.csv")["train/total"]
    assert steps == [0, 1, 2] and logged == pytest.approx(expected, rel=1e-5)
    assert "train/total" not in shown and shown["loss"] == f"{expected[-1]:.4g}"  # the last loss, once
    assert curves.path == tmp_path / "csv" / "version_0" / "curves.png" and curves.path.is_file()
