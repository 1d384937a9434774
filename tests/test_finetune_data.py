"""Fine-tuning data: window alignment, streaming flags and states, augmentation, label fraction,
and the OneCycle schedule's end points."""

import json

import numpy as np
import pytest
import torch

from evcmae.events.container import Events
from evcmae.finetune.augment import Augment
from evcmae.finetune.chunks import ChunkBatch, ChunkBatchSampler, ChunkDataset, ChunkKey
from evcmae.finetune.data import FinetuneDataModule
from evcmae.finetune.module import FinetuneModule, default_lr, one_cycle
from evcmae.finetune.recordings import select_fraction

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    dm = FinetuneDataModule(
        str(root / "tiny"),
        width=320,
        height=180,
        downsample=1,
        synth_preset="tiny",
        seq_len=3,
        batch_size=2,
        min_side=3,
        augment={"flip_prob": 1.0, "zoom_prob": 1.0, "zoom_range": [1.2, 1.4]},
    )
    dm.prepare_data()
    return dm


def test_label_times_are_window_ends(tiny):
    from evcmae.events.labels import load_labels

    for rec in tiny.recordings("train"):
        raw = load_labels(rec.path.with_name(rec.name + "_bbox.npy"))
        assert len(rec.labelled)
        for i in rec.labelled:
            boxes = rec.labels(i)
            assert np.all(boxes["t"] == rec.ends[i])  # a label time is exactly a window end
            assert rec.ends[i] in raw["t"]
        assert np.all(np.diff(rec.ends) == 50_000)
        ev = rec.window(int(rec.labelled[0]))
        assert ev.t.max() <= rec.ends[rec.labelled[0]] and ev.t.min() > rec.ends[rec.labelled[0]] - 50_000


def test_streaming_is_first_flags_follow_recordings():
    lengths, L = [7, 4, 9], 3
    sampler = ChunkBatchSampler(lengths, [np.arange(0, n, 2) for n in lengths], 2, L, "stream", seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for slot in range(2):
        keys = [b[slot] for b in batches]
        prev = None
        for k in keys:
            if prev is not None and k.recording == prev.recording and k.start == prev.start + L:
                assert not k.is_first  # continuing a recording: carry the state
            else:
                assert k.is_first and k.start == 0  # a new recording starts from its beginning
            prev = k
        seeds = {}
        for k in keys:  # augmentation fixed across the chunks of one recording pass
            if not k.is_first:
                assert k.aug_seed == seeds[k.recording]
            seeds[k.recording] = k.aug_seed
    mixed = list(ChunkBatchSampler(lengths, [np.arange(0, n, 2) for n in lengths], 4, L, "mixed", 0.5))
    assert all(b[2].is_first and b[3].is_first for b in mixed)
    rand = list(ChunkBatchSampler(lengths, [np.arange(0, n, 2) for n in lengths], 2, L, "random"))
    assert all(k.is_first for b in rand for k in b)


def test_flip_zoom_consistent_over_sequence(tiny):
    rec = tiny.recordings("train")[0]
    ds = ChunkDataset([rec], 3, tiny.augment)
    start = int(rec.labelled[1]) - 2
    plain = ChunkDataset([rec], 3, None)[ChunkKey(0, start, True, -1)]
    aug_sample = ds[ChunkKey(0, start, True, 1234)]
    aug = Augment.draw(np.random.default_rng(1234), rec.width, rec.height, **tiny.augment)
    assert aug.flip and aug.scale > 1
    for p, a in zip(plain["steps"], aug_sample["steps"]):
        if p["boxes"] is not None:  # every box of the sequence moved by the same transform
            expected = aug.boxes(p["boxes"], rec.width, rec.height)
            np.testing.assert_allclose(a["boxes"]["x"], expected["x"], rtol=1e-5)
        # events inside a box before augmentation land inside the transformed box
    labelled = [(p, a) for p, a in zip(plain["steps"], aug_sample["steps"]) if p["boxes"] is not None]
    p, a = labelled[0]
    k = next(k for k in range(len(p["boxes"])) if len(aug.boxes(p["boxes"][k : k + 1], rec.width, rec.height, 4)))
    b = p["boxes"][k]
    ev = Events(
        x=np.array([int(b["x"] + b["w"] / 2)]),
        y=np.array([int(b["y"] + b["h"] / 2)]),
        t=np.array([0]),
        p=np.array([1]),
        width=rec.width,
        height=rec.height,
    )
    moved = aug.events(ev, np.random.default_rng(0), rec.width, rec.height)
    tb = aug.boxes(p["boxes"][k : k + 1], rec.width, rec.height)[0]
    assert tb["x"] - 1 <= moved.x[0] <= tb["x"] + tb["w"] + 1 and tb["y"] - 1 <= moved.y[0] <= tb["y"] + tb["h"] + 1
    frame = torch.zeros(1, rec.height, rec.width)
    frame[0, int(b["y"] + b["h"] / 2), int(b["x"] + b["w"] / 2)] = 1
    yy, xx = torch.nonzero(aug.dense(frame)[0])[0].tolist()
    assert tb["x"] - 2 <= xx <= tb["x"] + tb["w"] + 2 and tb["y"] - 2 <= yy <= tb["y"] + tb["h"] + 2


def test_label_fraction_deterministic():
    items = list(range(20))
    a, b = select_fraction(items, 0.25, seed=3), select_fraction(items, 0.25, seed=3)
    assert a == b and len(a) == 5 and select_fraction(items, 0.25, seed=4) != a
    assert select_fraction(items, 0.01) and select_fraction(items, 1.0) == items
    with pytest.raises(ValueError):
        select_fraction(items, 0)


def _hist_batch(is_first, seed):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randint(0, 5, (2, 20, 36, 64), generator=g, dtype=torch.uint8) for _ in range(2)]
    lab = torch.tensor([[False, False], [True, True]])
    tgt = [[None, None], [torch.tensor([[0, 20.0, 15, 10, 10]]), torch.tensor([[1, 40.0, 20, 12, 8]])]]
    return ChunkBatch(
        x,
        tgt,
        lab,
        torch.tensor(is_first),
        torch.zeros(2, 2, dtype=torch.long),
        [0, 1],
        torch.ones(2, 2, dtype=torch.bool),
    )


def test_states_reset_and_detached():
    torch.manual_seed(0)
    detector = {"_target_": "evcmae.finetune.encoder.EventDetector", "input": "histogram"}
    module = FinetuneModule(detector, ["a", "b"], width=64, height=36)
    module.training_step(_hist_batch([True, True], 0), 0)
    carried = module._states
    assert all(t.grad_fn is None for s in carried for t in s)  # detached between chunks
    feats_carry, _, _ = module._run_chunk(_hist_batch([False, False], 1), carried)
    feats_reset, _, _ = module._run_chunk(_hist_batch([True, False], 1), carried)
    feats_zero, _, _ = module._run_chunk(_hist_batch([True, True], 1), None)
    f1, f2, f0 = feats_carry[2], feats_reset[2], feats_zero[2]
    assert not torch.allclose(f1[0], f2[0])  # sample 0 was reset ...
    assert torch.allclose(f2[0], f0[0], atol=1e-5)  # ... to exactly the zero state
    assert torch.allclose(f1[1], f2[1])  # sample 1 kept its memory


def test_one_cycle_end_points():
    lr, total = 1e-3, 400
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr, weight_decay=0.0)
    sched = one_cycle(opt, lr, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(lr / 20)
    assert max(lrs) == pytest.approx(lr) and int(np.argmax(lrs)) == round(0.005 * total) - 1
    assert lrs[-1] == pytest.approx(lr / 1e4, rel=1e-6)
    assert np.allclose(np.diff(lrs[10:]), np.diff(lrs[10:]).mean(), rtol=1e-3)  # linear decay
    assert default_lr(8) == pytest.approx(2e-4) and default_lr(32) == pytest.approx(4e-4)


def test_rvt_layout_matches_raw_windows_and_class_map(tiny):
    kw = dict(width=320, height=180, downsample=1, seq_len=3, batch_size=2, min_side=3)
    hist = FinetuneDataModule(str(tiny.root), input="histogram", rvt_root=str(tiny.root) + "_rvt", **kw)
    hist.prepare_data()  # preprocesses the raw recordings into RVT's layout
    for raw, rvt in zip(tiny.recordings("train"), hist.recordings("train")):
        assert raw.name == rvt.name
        np.testing.assert_array_equal(raw.ends, rvt.ends)
        np.testing.assert_array_equal(raw.labelled, rvt.labelled)
        np.testing.assert_allclose(raw.gt()["x"], rvt.gt()["x"], atol=1e-4)
    batch = next(iter(hist.train_dataloader()))
    assert batch.inputs[0].shape == (2, 20, 180, 320) and batch.inputs[0].dtype == torch.uint8
    three = FinetuneDataModule(str(tiny.root), class_map=[0, 1, 2, 1, 2, 1, 1, 2], **kw)
    ids = np.concatenate([r.gt()["class_id"] for r in three.recordings("train")])
    assert ids.max() <= 2


def test_regenerated_recordings_replace_the_histogram_cache_made_from_them(tmp_path):
    """The synthetic dataset generated again (here: another seed) makes the RVT-layout cache stale:
    it is removed and preprocessed again, unless it holds something else, which is kept."""
    kw = dict(input="histogram", width=320, height=180, downsample=1, seq_len=3, min_side=3, synth_preset="tiny")
    root, cache = tmp_path / "tiny", tmp_path / "tiny_rvt"

    def prepared(seed):
        FinetuneDataModule(str(root), rvt_root=str(cache), synth_seed=seed, **kw).prepare_data()
        return json.loads((root / "synth.json").read_text())["seed"]

    assert prepared(1) == 1
    (cache / "train" / "from_seed_1").touch()
    assert prepared(0) == 0
    assert not (cache / "train" / "from_seed_1").exists()
    assert len(list((cache / "train").iterdir())) == 2  # tiny's two training recordings
    (cache / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"tiny_rvt: .* holds 'notes.txt' besides split folders"):
        prepared(1)
    assert (cache / "notes.txt").read_text() == "mine"


class _FakeRecording:
    """Label frames only: window index -> boxes with the given class ids."""

    def __init__(self, name, frames):
        from evcmae.events.labels import BBOX_DTYPE

        self.name = name
        self._labels = {}
        for window, classes in frames.items():
            boxes = np.zeros(len(classes), BBOX_DTYPE)
            boxes["class_id"] = classes
            self._labels[window] = boxes


def test_recording_subsets_are_class_balanced_and_fixed_per_seed():
    from evcmae.finetune.recordings import recording_classes

    # 20 recordings: pedestrians everywhere, each rarer class in only two recordings
    recs = [_FakeRecording(f"r{i}", {10: [0, 1 + (i % 10)]}) for i in range(20)]
    for seed in range(4):
        a = select_fraction(recs, 0.1, seed)
        assert [r.name for r in a] == [r.name for r in select_fraction(recs, 0.1, seed)]
        assert len(a) == 2
    # ten classes cannot fit in two recordings: the draw with the most classes (3) is taken
    assert len(set().union(*map(recording_classes, select_fraction(recs, 0.1, 0)))) == 3
    few = [_FakeRecording(f"r{i}", {10: [0, 1 + (i % 2)]}) for i in range(20)]
    for seed in range(8):
        assert set().union(*map(recording_classes, select_fraction(few, 0.1, seed))) == {0, 1, 2}


def test_timestamp_thinning_keeps_every_recording_and_a_fraction_of_its_labels():
    recs = [_FakeRecording(f"r{i}", {w: [0] for w in range(0, 40, 2)}) for i in range(6)]  # 20 frames each
    kept = select_fraction(recs, 0.1, seed=1, mode="timestamps")
    assert [r.name for r in kept] == [f"r{i}" for i in range(6)]
    for r in kept:
        frames = sorted(r._labels)
        assert len(frames) == 2 and frames[1] - frames[0] == 20  # every 10th label frame
    offsets = {sorted(r._labels)[0] for r in kept}
    assert len(offsets) > 1  # offsets drawn per recording
    with pytest.raises(ValueError, match="label_fraction_mode"):
        select_fraction(recs, 0.5, mode="frames")


def test_labelled_summary_counts_the_selected_recordings_labels():
    from evcmae.finetune.recordings import labelled_summary

    recs = [_FakeRecording("a", {1: [0, 1], 3: [2]}), _FakeRecording("b", {2: [0]})]
    assert labelled_summary(recs) == {"recordings": ["a", "b"], "label_frames": 3, "boxes": 4}
    thinned = select_fraction(
        [_FakeRecording(f"r{i}", {w: [0] for w in range(10)}) for i in range(3)], 0.5, 0, "timestamps"
    )
    assert labelled_summary(thinned)["label_frames"] == 15  # every 2nd of 10 frames, 3 recordings


def test_subset_seed_keeps_the_subset_and_not_the_training_seed(tiny):
    """subset_seed draws the labelled recordings; seed still drives the sampler's order and
    augmentation (the study's repeats: same subset, another training seed)."""

    def drawn(seed, subset_seed=None):
        tiny.label_fraction, tiny.seed, tiny._subset_seed, tiny._recordings = 0.5, seed, subset_seed, {}
        names = [r.name for r in tiny.recordings("train")]
        first = next(iter(tiny.train_dataloader().batch_sampler))
        return names, [(k.recording, k.start, k.aug_seed) for k in first], tiny.labelled_subset()["seed"]

    try:
        alone, alone_keys, _ = drawn(1)
        # a training seed that alone draws other recordings, so the kept subset can only be subset_seed's
        other = next(s for s in range(2, 40) if drawn(s)[0] != alone)
        kept, kept_keys, recorded = drawn(other, subset_seed=1)
        assert kept == alone and recorded == 1
        assert kept_keys != alone_keys  # the training seed still changes the batches
    finally:
        tiny.label_fraction, tiny.seed, tiny._subset_seed, tiny._recordings = 1.0, 0, None, {}


def test_fine_tuning_records_its_labelled_subset(tiny, tmp_path):
    """The subset file names the recordings the train split really uses, with their boxes."""
    from evcmae.tools.finetune import write_labelled_subset

    tiny.label_fraction, tiny.seed, tiny._recordings = 0.5, 1, {}
    try:
        subset = write_labelled_subset(tiny, tmp_path)
        used = tiny.recordings("train")
        assert subset == json.loads((tmp_path / "labelled_subset.json").read_text())
        assert subset["recordings"] == [r.name for r in used] and len(used) < subset["of_recordings"]
        assert subset["boxes"] == sum(len(r.gt()) for r in used) > 0
        assert (subset["label_fraction"], subset["mode"], subset["seed"]) == (0.5, "recordings", 1)
    finally:
        tiny.label_fraction, tiny.seed, tiny._recordings = 1.0, 0, {}
