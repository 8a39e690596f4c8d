import numpy as np
import pytest

from commons.data.kitti_tracking import read_calib, read_labels, split_clips


def test_read_labels_and_calib(tmp_path):
    lab = tmp_path / "0000.txt"
    lab.write_text(
        "0 1 Car 0 0 -1.5 10 20 110 80 1.5 1.6 3.9 2.0 1.7 15.0 0.1\n"
        "0 -1 DontCare -1 -1 -10 0 0 5 5 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "1 1 Car 0 1 -1.5 12 20 112 80 1.5 1.6 3.9 2.1 1.7 14.0 0.12\n"
    )
    labels = read_labels(lab)
    assert sorted(labels) == [0, 1]
    assert labels[0][0].track_id == 1 and labels[0][0].location == (2.0, 1.7, 15.0)
    assert labels[0][1].cls == "DontCare" and labels[1][0].occluded == 1
    cal = tmp_path / "c.txt"
    p2 = np.arange(12.0)
    cal.write_text(f"P2: {' '.join(map(str, p2))}\nP3: {' '.join(map(str, p2 + 1))}\nR_rect {' '.join(['1'] * 9)}\n")
    mats = read_calib(cal)
    assert mats["P2"].shape == (3, 4) and mats["P3"][0, 0] == 1.0 and mats["R_rect"].shape == (3, 3)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 Car 0 0\n")
    with pytest.raises(ValueError):
        read_labels(bad)


def test_split_clips_even_train_odd_val():
    s = split_clips(130)
    assert [c.start for c in s["train"]] == [0, 80] and [c.start for c in s["val"]] == [40, 120]
    assert len(s["val"][1]) == 10
