"""Raw event readers (DAT, EVT 2.0, EVT 3.0, AEDAT4) and format detection, checked against
hand-built byte streams and against the figures of the real recordings in shared/data."""

import warnings

import numpy as np
import pytest

from evcmae.events.container import Events
from evcmae.events.dat import read_dat
from evcmae.events.errors import EventFileError
from evcmae.events.evt2 import read_evt2
from evcmae.events.evt3 import decode_evt3, encode_evt3, read_evt3, write_evt3
from evcmae.events.formats import detect_format, read_events
from evcmae.events.h5 import write_h5
from evcmae.events.labels import BBOX_DTYPE, save_labels


def columns(ev):
    return [ev.x.tolist(), ev.y.tolist(), ev.t.tolist(), ev.p.tolist()]


def assert_same_events(a, b):
    for k in "xytp":
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


# -- real recordings (figures from shared/data/README.md) ---------------------------------------


def check_figures(ev, n, t, x, y, on=None):
    assert len(ev) == n
    assert (int(ev.t.min()), int(ev.t.max())) == t
    assert (int(ev.x.min()), int(ev.x.max())) == x
    assert (int(ev.y.min()), int(ev.y.max())) == y
    if on is not None:
        assert round(float(ev.p.mean()), 3) == on


def test_real_evt2(shared_data):
    path = shared_data / "evt2_gen3_ring.raw"
    assert detect_format(path) == "evt2"
    ev = read_evt2(path)
    check_figures(ev, 539_481, (1_317_888, 1_367_888), (60, 599), (18, 475), 0.682)
    assert ev.dropped_no_time == 0 and ev.is_sorted()
    assert (ev.width, ev.height) == (None, None)  # its header states no geometry


def test_real_dat(shared_data):
    path = shared_data / "ncars_atis_sample.dat"
    assert detect_format(path) == "dat"
    ev = read_dat(path)
    check_figures(ev, 2_009, (0, 99_952), (0, 77), (0, 41), 0.672)


def test_real_aedat4(shared_data):
    pytest.importorskip("aedat")
    from evcmae.events.aedat import read_aedat4

    path = shared_data / "dvxplorer_sample.aedat4"
    assert detect_format(path) == "aedat4"
    ev = read_aedat4(path)
    assert len(ev) == 111_954 and (ev.width, ev.height) == (320, 240)
    assert round((int(ev.t.max()) - int(ev.t.min())) / 1e6, 2) == 0.59  # µs, not ns or ms
    assert (int(ev.x.min()), int(ev.x.max()), int(ev.y.min()), int(ev.y.max())) == (0, 319, 0, 239)
    assert set(np.unique(ev.p).tolist()) == {0, 1}


def test_real_windowed_read_matches_slice(shared_data):
    path = shared_data / "evt2_gen3_ring.raw"
    whole = read_evt2(path)
    part = read_events(path, t_start_us=1_330_000, t_end_us=1_340_000)
    inside = (whole.t >= 1_330_000) & (whole.t < 1_340_000)
    assert len(part) == int(inside.sum()) > 0
    assert_same_events(part, whole[inside])


def test_truncated_aedat4(shared_data, tmp_path):
    pytest.importorskip("aedat")
    from evcmae.events.aedat import read_aedat4

    cut = tmp_path / "cut.aedat4"
    cut.write_bytes((shared_data / "dvxplorer_sample.aedat4").read_bytes()[:500_000])
    with pytest.raises(EventFileError, match="cut.aedat4.*truncated"):
        read_aedat4(cut)
    with pytest.warns(UserWarning, match="kept the events"):
        part = read_aedat4(cut, truncated="drop")
    assert 0 < len(part) < 111_954


def test_aedat_missing_package_message(monkeypatch):
    import sys

    from evcmae.events import aedat

    monkeypatch.setitem(sys.modules, "aedat", None)
    with pytest.raises(ImportError, match=r"pip install evcmae\[aedat\]"):
        aedat.read_aedat4("whatever.aedat4")


# -- DAT -------------------------------------------------------------------------------------

DAT_HEADER = b"% Data file containing CD events.\n% Version 2\n% Height 240\n% Width 304\n"


def dat_bytes(t, x, y, p, header=DAT_HEADER):
    rec = np.empty((len(t), 2), "<u4")
    rec[:, 0] = t
    rec[:, 1] = np.asarray(x) | (np.asarray(y) << 14) | (np.asarray(p) << 28)
    return header + bytes([0x0C, 8]) + rec.tobytes()


def test_dat_hand_built(tmp_path):
    path = tmp_path / "a.dat"
    path.write_bytes(dat_bytes([5, 9, 9], [3, 303, 0], [0, 239, 17], [1, 0, 1]))
    ev = read_dat(path)
    assert columns(ev) == [[3, 303, 0], [0, 239, 17], [5, 9, 9], [1, 0, 1]]
    assert (ev.width, ev.height) == (304, 240)


def test_dat_truncated_record(tmp_path):
    path = tmp_path / "cut.dat"
    path.write_bytes(dat_bytes([1, 2], [1, 2], [1, 2], [0, 1]) + b"\x07\x00\x00")
    with pytest.raises(EventFileError, match=r"cut\.dat.*3 byte\(s\) of a partial 8-byte.*truncated"):
        read_dat(path)
    with pytest.warns(UserWarning, match="complete part"):
        ev = read_dat(path, truncated="drop")
    assert columns(ev) == [[1, 2], [1, 2], [1, 2], [0, 1]]


def test_dat_outside_sensor_dropped_and_counted(tmp_path):
    path = tmp_path / "wide.dat"
    path.write_bytes(dat_bytes([1, 2, 3], [10, 400, 11], [5, 5, 300], [0, 1, 1]))
    with pytest.warns(UserWarning, match="dropped 2 of 3 events outside the 304x240"):
        ev = read_dat(path)
    assert columns(ev) == [[10], [5], [1], [0]] and ev.dropped_out_of_range == 2


def test_dat_decreasing_time(tmp_path):
    path = tmp_path / "back.dat"
    path.write_bytes(dat_bytes([10, 4, 12], [1, 2, 3], [0, 0, 0], [0, 0, 0]))
    with pytest.raises(EventFileError, match=r"back\.dat.*timestamps decrease.*10 -> 4"):
        read_dat(path)
    with pytest.warns(UserWarning, match="sorted"):
        ev = read_dat(path, on_unsorted="sort")
    assert ev.t.tolist() == [4, 10, 12] and ev.x.tolist() == [2, 1, 3]


def test_dat_bad_inputs(tmp_path):
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(EventFileError, match="empty.dat: empty file"):
        read_dat(empty)
    no_types = tmp_path / "header_only.dat"
    no_types.write_bytes(DAT_HEADER)
    with pytest.raises(EventFileError, match="before the event type"):
        read_dat(no_types)
    bad_size = tmp_path / "size.dat"
    bad_size.write_bytes(DAT_HEADER + bytes([0x0C, 16]) + bytes(16))
    with pytest.raises(EventFileError, match="record size is 16"):
        read_dat(bad_size)
    bad_pol = tmp_path / "pol.dat"
    bad_pol.write_bytes(dat_bytes([1], [1], [1], [7]))
    with pytest.raises(EventFileError, match="pol.dat.*polarity"):
        read_dat(bad_pol)


# -- EVT 2.0 -----------------------------------------------------------------------------------

EVT2_HEADER = b"% evt 2.0\n% format EVT2;height=480;width=640\n% geometry 640x480\n% end\n"


def cd2(on, t_low, x, y):
    return (on << 28) | (t_low << 22) | (x << 11) | y


def th2(value):
    return (0x8 << 28) | value


def write_evt2(path, words, header=EVT2_HEADER, extra=b""):
    path.write_bytes(header + np.asarray(words, "<u4").tobytes() + extra)
    return path


def test_evt2_hand_built(tmp_path):
    words = [
        cd2(1, 7, 1, 1),  # before any TIME_HIGH: no valid time
        th2(5),  # time base 5 << 6 = 320
        cd2(0, 3, 10, 20),
        cd2(1, 63, 639, 479),
        (0xA << 28) | 12345,  # external trigger: not a CD event
        th2(6),
        cd2(1, 0, 0, 0),
    ]
    path = write_evt2(tmp_path / "a.raw", words)
    assert detect_format(path) == "evt2"
    with pytest.warns(UserWarning, match="dropped 1 events before the first TIME_HIGH"):
        ev = read_evt2(path)
    assert columns(ev) == [[10, 639, 0], [20, 479, 0], [323, 383, 384], [0, 1, 1]]
    assert ev.dropped_no_time == 1 and (ev.width, ev.height) == (640, 480)


def test_evt2_time_high_wrap(tmp_path):
    top = (1 << 28) - 1
    path = write_evt2(tmp_path / "wrap.raw", [th2(top), cd2(0, 1, 1, 1), th2(0), cd2(0, 2, 1, 1)])
    assert read_evt2(path).t.tolist() == [(top << 6) | 1, (1 << 34) | 2]


def test_evt2_partial_word(tmp_path):
    path = write_evt2(tmp_path / "cut.raw", [th2(1), cd2(1, 1, 2, 3)], extra=b"\x01\x02")
    with pytest.raises(EventFileError, match=r"cut\.raw.*2 byte\(s\) of a partial 4-byte.*truncated"):
        read_evt2(path)
    with pytest.warns(UserWarning, match="complete part"):
        assert columns(read_evt2(path, truncated="drop")) == [[2], [3], [65], [1]]


def test_evt2_outside_sensor_and_order(tmp_path):
    path = write_evt2(tmp_path / "o.raw", [th2(1), cd2(1, 5, 700, 3), cd2(0, 4, 1, 1), cd2(0, 2, 2, 2)])
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        with pytest.raises(EventFileError, match="timestamps decrease"):
            read_evt2(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = read_evt2(path, on_unsorted="sort")
    assert ev.t.tolist() == [66, 68] and ev.dropped_out_of_range == 1


def test_evt2_garbage_and_header_problems(tmp_path):
    rng = np.random.default_rng(1)
    garbage = tmp_path / "garbage.raw"
    garbage.write_bytes(EVT2_HEADER + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(EventFileError, match="garbage.raw.*undefined in EVT 2.0"):
        read_evt2(garbage)
    unended = tmp_path / "unended.raw"
    unended.write_bytes(b"% evt 2.0\n% format EVT2;width=6")
    with pytest.raises(EventFileError, match="unended.raw.*header never ends"):
        read_evt2(unended)
    with pytest.raises(EventFileError, match="header never ends"):
        detect_format(unended)
    header_only = write_evt2(tmp_path / "none.raw", np.empty(0, np.uint32))
    assert len(read_evt2(header_only)) == 0


# -- EVT 3.0 -----------------------------------------------------------------------------------


def test_evt3_hand_built_words():
    words = np.array(
        [
            0x0003,
            0x2001,  # row and event before any time: dropped, counted
            0x8001,
            0x6005,  # TIME_HIGH 1, TIME_LOW 5: t = 4096 + 5
            0x0007,  # ADDR_Y 7
            0x2800 | 100,  # ADDR_X x=100, ON
            0x3000 | 200,  # VECT_BASE_X 200, OFF
            0x4000 | 0b100000000101,  # VECT_12: x 200, 202, 211; base -> 212
            0x5000 | 0b10000001,  # VECT_8: x 212, 219; base -> 220
            0x2800 | 3,  # ADDR_X leaves the vector base alone
            0x4000 | 0b10,  # VECT_12: x 221
            0xA123,
            0xE000,
            0xF000,  # trigger, others, continued: no CD events
            0x6006,  # TIME_LOW 6
            0x0001 | 0x800,  # ADDR_Y 1 (bit 11 is the system type, not part of y)
            0x2000 | 5,  # x=5, OFF
            0x8002,  # TIME_HIGH 2 with no TIME_LOW yet: low bits 0, t = 8192
            0x2800 | 6,  # x=6, ON
            0x1004,
            0x2009,  # EM_Y row: exposure-measurement event, not CD
        ],
        dtype=np.uint16,
    )
    ev = decode_evt3(words)
    assert columns(ev) == [
        [100, 200, 202, 211, 212, 219, 3, 221, 5, 6],
        [7] * 8 + [1, 1],
        [4101] * 8 + [4102, 8192],
        [1, 0, 0, 0, 0, 0, 1, 0, 0, 1],
    ]
    assert ev.dropped_no_time == 1


def test_evt3_time_counter_wrap_and_time_low_overflow():
    # TIME_LOW goes down after every TIME_HIGH (as a sensor writes it); TIME_HIGH wraps from
    # 4095 to 0 (the 24-bit counter). A decoder that counts TIME_LOW overflows and never resets
    # the count drifts here.
    words = np.array(
        [0x8FFE, 0x6F00, 0x0000, 0x2001, 0x8FFF, 0x6010, 0x2002, 0x8000, 0x6005, 0x2003, 0x8001, 0x6004, 0x2004],
        dtype=np.uint16,
    )
    t = decode_evt3(words).t.tolist()
    assert t == [(4094 << 12) | 0xF00, (4095 << 12) | 0x10, (1 << 24) | 5, (1 << 24) | (1 << 12) | 4]


def reference_evt3(words):
    """Word-by-word EVT 3.0 state machine, written for reading rather than speed."""
    out, dropped = [], 0
    y = base = pol = high = prev_high = None
    low, loops, is_cd = 0, 0, True
    for w in (int(v) for v in words):
        kind, pay = w >> 12, w & 0xFFF
        if kind in (0x0, 0x1):
            y, is_cd = pay & 0x7FF, kind == 0x0
        elif kind == 0x8:
            if prev_high is not None and prev_high - pay >= 2048:
                loops += 1
            high, prev_high, low = pay + 4096 * loops, pay, 0
        elif kind == 0x6:
            low = pay
        elif kind == 0x3:
            base, pol = pay & 0x7FF, pay >> 11
        elif kind in (0x2, 0x4, 0x5):
            if kind == 0x2:
                lanes, x0, p = [0], pay & 0x7FF, pay >> 11
            else:
                lanes = [i for i in range(12 if kind == 0x4 else 8) if pay >> i & 1]
                x0, p = base, pol
            placed = y is not None and high is not None and x0 is not None
            if is_cd and not placed:
                dropped += len(lanes)
            elif is_cd:
                out += [(x0 + i, y, (high << 12) + low, p) for i in lanes]
            if kind != 0x2 and base is not None:
                base += 12 if kind == 0x4 else 8
    return out, dropped


def test_evt3_matches_reference_on_random_words():
    rng = np.random.default_rng(7)
    kinds = np.array([0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8, 0xA, 0xE])
    weights = np.array([6, 1, 10, 4, 5, 5, 6, 3, 1, 1], float)
    kind = rng.choice(kinds, 6000, p=weights / weights.sum())
    words = ((kind << 12) | rng.integers(0, 4096, kind.size)).astype(np.uint16)
    ev = decode_evt3(words)
    expected, dropped = reference_evt3(words)
    assert len(expected) > 1000
    assert list(zip(ev.x.tolist(), ev.y.tolist(), ev.t.tolist(), ev.p.tolist())) == expected
    assert ev.dropped_no_time == dropped


def random_events(n, seed, t_span=50_000_000, order="typx"):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t_span, n))
    # half the events in short horizontal runs sharing (t, y, p), as a moving edge gives
    x = rng.integers(0, 1280, n)
    y = rng.integers(0, 720, n)
    p = rng.integers(0, 2, n)
    run = rng.random(n) < 0.5
    run[0] = False
    idx = np.flatnonzero(run)
    t[idx], y[idx], p[idx] = t[idx - 1], y[idx - 1], p[idx - 1]
    x[idx] = np.minimum(x[idx - 1] + 1, 1279)
    t = np.maximum.accumulate(t)
    keys = (x, p, y, t) if order == "typx" else (t,)
    o = np.lexsort(keys)
    return Events(x[o], y[o], t[o], p[o], width=1280, height=720)


@pytest.mark.parametrize("order", ["typx", "t"])
def test_evt3_round_trip_random(order):
    ev = random_events(40_000, seed=3, order=order)
    words = encode_evt3(ev)
    back = decode_evt3(words)
    assert_same_events(back, ev)
    assert back.dropped_no_time == 0
    # 50 s spans several wraps of the 24-bit (16.8 s) counter: check the span, not just values
    assert int(back.t[-1] - back.t[0]) == int(ev.t[-1] - ev.t[0]) > 2 * (1 << 24)
    types = np.bincount(words >> 12, minlength=16)
    if order == "typx":  # sorted like a sensor readout: neighbours share vector words
        assert types[0x4] + types[0x5] > 0 and types[0x3] > 0
    # state words only where the state changes
    th = words[words >> 12 == 0x8]
    assert np.all(th[1:] != th[:-1])


def test_evt3_encoder_words():
    ev = Events(x=[24, 26, 27, 40, 5], y=[3, 3, 3, 3, 4], t=[4100, 4100, 4100, 4100, 4101], p=[1, 1, 1, 1, 0])
    words = encode_evt3(ev).tolist()
    assert words == [0x8001, 0x6004, 0x0003, 0x3800 | 24, 0x5000 | 0b1101, 0x2800 | 40, 0x6005, 0x0004, 0x2000 | 5]
    assert_same_events(decode_evt3(np.array(words, np.uint16)), ev)


def test_evt3_late_start_and_long_gap():
    # the counter starts at 0: a late first event and a 40 s gap need intermediate TIME_HIGH words
    ev = Events(x=[1, 2, 3], y=[1, 1, 1], t=[90_000_000, 90_000_001, 130_000_000], p=[0, 0, 1])
    assert_same_events(decode_evt3(encode_evt3(ev)), ev)
    with pytest.raises(ValueError, match="non-decreasing"):
        encode_evt3(Events(x=[1, 2], y=[1, 1], t=[5, 4], p=[0, 0]))


def test_evt3_file_round_trip_and_window(tmp_path):
    ev = random_events(5_000, seed=4, t_span=2_000_000)
    path = tmp_path / "rec.raw"
    write_evt3(path, ev, 1280, 720)
    assert detect_format(path) == "evt3"
    back = read_evt3(path)
    assert_same_events(back, ev)
    assert (back.width, back.height) == (1280, 720)
    part = read_events(path, t_start_us=500_000, t_end_us=900_000)
    assert_same_events(part, ev.time_window(500_000, 900_000))


def test_evt3_odd_byte_count(tmp_path):
    ev = Events(x=[1, 2], y=[3, 3], t=[10, 20], p=[1, 0])
    path = tmp_path / "odd.raw"
    write_evt3(path, ev, 64, 64)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(EventFileError, match=r"odd\.raw.*1 byte\(s\) of a partial 2-byte.*truncated"):
        read_evt3(path)
    with pytest.warns(UserWarning, match="complete part"):
        assert_same_events(read_evt3(path, truncated="drop"), ev)


def test_evt3_outside_sensor_and_garbage(tmp_path):
    ev = Events(x=[1, 100, 2], y=[3, 3, 3], t=[10, 20, 30], p=[1, 0, 1])
    path = tmp_path / "small.raw"
    write_evt3(path, ev, 64, 64)
    with pytest.warns(UserWarning, match="dropped 1 of 3 events outside the 64x64"):
        back = read_evt3(path)
    assert back.x.tolist() == [1, 2] and back.dropped_out_of_range == 1
    rng = np.random.default_rng(2)
    garbage = tmp_path / "garbage.raw"
    garbage.write_bytes(b"% evt 3.0\n% end\n" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(EventFileError, match="garbage.raw.*undefined in EVT 3.0"):
        read_evt3(garbage)


def test_evt3_decreasing_time_from_stream(tmp_path):
    # TIME_LOW stepping back inside one TIME_HIGH period is a real decrease, not a wrap
    words = np.array([0x8001, 0x6009, 0x0001, 0x2001, 0x6003, 0x2002], "<u2")
    path = tmp_path / "back.raw"
    path.write_bytes(b"% evt 3.0\n% end\n" + words.tobytes())
    with pytest.raises(EventFileError, match="timestamps decrease"):
        read_evt3(path)
    with pytest.warns(UserWarning, match="sorted"):
        assert read_evt3(path, on_unsorted="sort").x.tolist() == [2, 1]


# -- format detection ---------------------------------------------------------------------------


def test_detect_formats(tmp_path):
    ev = Events(x=[1, 2], y=[3, 4], t=[5, 6], p=[0, 1])
    write_h5(tmp_path / "a_td.h5", ev, 10, 10)
    labels = np.zeros(2, BBOX_DTYPE)
    save_labels(tmp_path / "a_bbox.npy", labels)
    (tmp_path / "legacy.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]))
    (tmp_path / "named.bin").write_bytes(EVT2_HEADER)
    assert detect_format(tmp_path / "a_td.h5") == "h5"
    assert detect_format(tmp_path / "a_bbox.npy") == "bbox_npy"
    assert detect_format(tmp_path / "legacy.dat") == "dat"
    assert detect_format(tmp_path / "named.bin") == "evt2"  # content, not extension
    assert_same_events(read_events(tmp_path / "a_td.h5", t_start_us=6), ev[1:])
    with pytest.raises(EventFileError, match="a_bbox.npy.*box label file"):
        read_events(tmp_path / "a_bbox.npy")


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.raw", b"", "empty file"),
        ("noise.raw", bytes(range(7, 200)), "unknown file format"),
        ("plain.npy", None, "not a structured array of box labels"),
        ("evt4.raw", b"% format EVT4;width=4;height=4\n% end\n", "EVT4 is not supported"),
        ("silent.raw", b"% camera something\n% end\n\x01\x02\x03\x04", "names no event encoding"),
        ("old.aedat", b"#!AER-DAT2.0\r\n", "AEDAT 2.0 is not supported"),
    ],
)
def test_detect_bad_inputs(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        np.save(path, np.arange(4))
    else:
        path.write_bytes(content)
    with pytest.raises(EventFileError, match=problem) as info:
        read_events(path)
    assert name in str(info.value)
