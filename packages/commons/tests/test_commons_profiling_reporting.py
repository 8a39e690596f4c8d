import numpy as np
import pytest
import torch

from commons.profiling import PeakMemory, Timer, count_parameters
from commons.reporting import DemoSection, markdown_table, save_image_grid, save_line_plot


def test_count_parameters_shared_and_trainable():
    shared = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(shared, shared, torch.nn.Linear(4, 2))
    assert count_parameters(model) == 20 + 10
    model[2].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 20 + 2
    with pytest.raises(TypeError):
        count_parameters("model")


def test_peak_memory_sees_a_large_cpu_allocation():
    with PeakMemory("cpu") as small:
        torch.ones(10)
    with PeakMemory("cpu") as big:
        x = torch.ones(64 * 1024 * 1024 // 4 * 3)  # 192 MiB, touched
        x += 1
        del x
    assert big.peak_bytes > 150 * 2**20
    assert small.peak_bytes < big.peak_bytes
    with pytest.raises(ValueError, match="interval"):
        PeakMemory("cpu", interval=0)


def test_timer_measures_sleep():
    import time

    with Timer() as t:
        time.sleep(0.05)
    assert 0.04 < t.seconds < 1.0


def test_markdown_table_and_grid_and_plot(tmp_path):
    table = markdown_table([{"a": 1, "b": 0.123456}, {"a": 2000, "c": "x"}])
    lines = table.splitlines()
    assert lines[0] == "| a | b | c |" and lines[2] == "| 1 | 0.1235 |  |" and "2,000" in lines[3]
    with pytest.raises(ValueError):
        markdown_table([])
    from PIL import Image

    path = save_image_grid([torch.zeros(3, 4, 4), np.full((4, 4, 3), 255, np.uint8), torch.ones(1, 4, 4)],
                           tmp_path / "g.png", nrow=2, padding=1)
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert img[1, 1].tolist() == [0, 0, 0] and img[1, 6].tolist() == [255, 255, 255]
    plot = save_line_plot(tmp_path / "p.png", {"acc": ([1, 2, 3], [0.5, 0.6, 0.7])}, "task", "accuracy")
    assert plot.stat().st_size > 1000
    with pytest.raises(ValueError, match="differ in length"):
        save_line_plot(tmp_path / "q.png", {"x": ([1, 2], [1])})
    assert DemoSection("t", "m").images == []


def test_demo_runs(tmp_path):
    from commons.demo import run

    section = run(tmp_path)
    assert all(p.exists() for p in section.images)
    assert "PSNR" in section.markdown


def test_image_grid_labels_are_drawn_inside_the_picture(tmp_path):
    from PIL import Image

    tiles = [torch.full((3, 8, 8), 0.5) for _ in range(4)]
    plain = np.asarray(Image.open(save_image_grid(tiles, tmp_path / "p.png", nrow=2, scale=4)))
    labelled = np.asarray(Image.open(save_image_grid(tiles, tmp_path / "l.png", nrow=2, scale=4,
                                                     col_labels=["input", "ours"], row_labels=["a", "b"])))
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    top, left = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
    assert np.array_equal(labelled[top:, left:], plain)  # the grid itself is untouched
    assert (labelled[:top] < 128).any() and (labelled[top:, :left] < 128).any()  # dark text in both strips
    with pytest.raises(ValueError, match="col_labels"):
        save_image_grid(tiles, tmp_path / "x.png", nrow=2, col_labels=["one"])
