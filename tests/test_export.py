"""evcmae-export: the recurrent step as TorchScript / ONNX, its states explicit, equal to PyTorch."""

import json

import pytest
import torch

from evcmae.finetune.encoder import EventDetector
from evcmae.finetune.export import RecurrentStep, export_detector, step_inputs
from evcmae.finetune.rvt_checkpoint import rvt_name

torch.set_num_threads(1)


def rvt_gen1_checkpoint(path):
    """A (random) RVT-tiny Gen1 checkpoint: export takes RVT's files as they are."""
    torch.manual_seed(0)
    model = EventDetector("histogram", "tiny", 2, 240, 304, partition_split=1).eval()
    torch.save({"state_dict": {f"mdl.{rvt_name(k)}": v for k, v in model.state_dict().items()}}, path)
    return model


def test_step_with_zero_states_is_the_models_first_window():
    model = EventDetector("histogram", "tiny", 3, 96, 128).eval()
    x, *zeros = step_inputs(model.detector, 20, 96, 128)
    with torch.no_grad():
        decoded, states = model(x)  # no states: the start of a recording
        out = RecurrentStep(model.detector).eval()(x, *zeros)
        torch.testing.assert_close(out[0], decoded, rtol=1e-6, atol=1e-6)  # memory layouts differ
        flat = [t for s in states for t in s]
        for got, want in zip(out[1:], flat):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        # and the next window from those states, as the caller would feed them
        x2 = x.flip(-1)
        decoded2, _ = model(x2, states)
        out2 = RecurrentStep(model.detector).eval()(x2, *out[1:])
    torch.testing.assert_close(out2[0], decoded2, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_torchscript_cli_matches_pytorch(tmp_path, capsys):
    from evcmae.tools.export import main

    rvt_gen1_checkpoint(tmp_path / "rvt.ckpt")
    out = tmp_path / "detector.pt"
    assert main([str(tmp_path / "rvt.ckpt"), "--format", "torchscript", "--out", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("over 2 windows: ")[1].split()[0])
    assert diff < 1e-4
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["inputs"]["x"] == [1, 20, 240, 304] and info["inputs"]["h1"] == [1, 32, 64, 80]  # padded 256x320
    assert info["outputs"][0] == "detections" and info["outputs"][-1] == "c4_out"
    assert info["not_exported"] is None and info["num_classes"] == 2


@pytest.mark.slow
def test_onnx_matches_pytorch_through_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs onnx + onnxscript")
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx + onnxscript")
    pytest.importorskip("onnxruntime", reason="the parity check runs the graph in onnxruntime")
    from evcmae.tools.export import check_parity

    model = EventDetector("histogram", "tiny", 3, 96, 128).eval()
    info = export_detector(model, tmp_path / "d.onnx", "onnx")
    assert (tmp_path / "d.onnx").is_file() and info["format"] == "onnx"
    assert check_parity(model, tmp_path / "d.onnx", "onnx") < 1e-4


def test_sparse_checkpoint_exports_the_dense_part_and_says_so(tmp_path):
    pytest.importorskip("spconv")
    model = EventDetector("sparse", "tiny", 3, 64, 96, backbone={}, grid=(10, 64, 96)).eval()
    info = export_detector(model, tmp_path / "dense.pt", "torchscript")
    assert "spconv" in info["not_exported"] and "not exportable" in info["not_exported"]
    c, h, w = model.encoder.out_channels, *model.encoder.out_grid[1:]
    assert info["inputs"]["x"] == [1, c, h, w]
    traced = torch.jit.load(str(tmp_path / "dense.pt"))
    x, *states = step_inputs(model.detector, c, h, w)
    with torch.no_grad():
        expected = model.forward_detect(model.detector.forward_backbone(x)[0])
        torch.testing.assert_close(traced(x, *states)[0], expected, rtol=1e-5, atol=1e-5)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="format must be one of"):
        export_detector(EventDetector("histogram", "tiny", 3, 64, 64), "x.bin", "tflite")
