"""Split CIFAR / Tiny-ImageNet loaders on small made-up data: labels per task, normalisation, train transform."""

import numpy as np
import pytest
import torch

from clfreq import create_method, split_cifar, split_tinyimagenet, train_continual


def test_split_cifar10_from_a_stand_in_dataset(monkeypatch):
    import commons.data

    rng = np.random.default_rng(0)

    def fake_cifar(name, root, train=True, **_):  # torchvision checks md5 sums, so stand in for the files
        n = 4 if train else 2
        return [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), c) for c in range(10) for _ in range(n)]

    monkeypatch.setattr(commons.data, "cifar", fake_cifar)
    b = split_cifar("unused", "cifar10")
    assert b.num_tasks == 5 and b.classes_per_task == 2 and b.train[0][0].shape == (8, 3, 32, 32)
    assert [sorted(set(y.tolist())) for _, y in b.train] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    mean, std = torch.tensor(b.mean), torch.tensor(b.std)
    torch.testing.assert_close(mean, torch.tensor((0.4914, 0.4822, 0.4465)))
    assert b.augment == {"padding": 4, "flip": True}  # mammoth's CIFAR train transform is on by default
    torch.testing.assert_close(b.black, -mean / std)
    assert float(b.train[0][0].min()) >= float((-mean / std).min()) - 1e-5  # normalised from [0, 1]
    b.train, b.test = b.train[:2], b.test[:2]
    r = train_continual(create_method("er", nf=2, buffer_size=4), b, epochs=1, seed=0)
    assert r["augment"] == "Augment(padding=4, flip=True)" and np.isfinite(r["class_il"])


def test_split_tinyimagenet_folder_layout(tmp_path):
    from PIL import Image

    wnids = ["n01443537", "n01629819"]
    rng = np.random.default_rng(0)
    for w in wnids:
        (tmp_path / "train" / w / "images").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG")
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(wnids * 2):
        img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        img.save(tmp_path / "val" / "images" / f"v{i}.JPEG")
        lines.append(f"v{i}.JPEG\t{w}\t0\t0\t63\t63")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    b = split_tinyimagenet(tmp_path, classes_per_task=1)
    assert b.num_tasks == 2 and b.train[0][0].shape == (3, 3, 64, 64) and b.test[1][0].shape == (2, 3, 64, 64)
    assert b.augment == {"padding": 4, "flip": True}
    with pytest.raises(ValueError, match="Tiny-ImageNet"):
        split_tinyimagenet(tmp_path / "train")


def test_prompt_split_cifar100_loader_from_a_stand_in_dataset(monkeypatch):
    import types

    import commons.data
    from clfreq.prompt import cifar100_tasks

    rng = np.random.default_rng(0)

    def fake_cifar(name, root, train=True, download=False, **_):
        assert name == "cifar100" and not download
        n = 2 if train else 1
        labels = [c for c in range(100) for _ in range(n)]
        return types.SimpleNamespace(data=rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8),
                                     targets=labels)

    monkeypatch.setattr(commons.data, "cifar", fake_cifar)
    train, test = cifar100_tasks("unused", image_size=16)
    assert len(train) == len(test) == 10
    assert [t.classes for t in train] == [tuple(range(10 * i, 10 * i + 10)) for i in range(10)]  # natural order
    assert train[3].images.shape == (20, 3, 16, 16) and test[3].images.shape == (10, 3, 16, 16)
    assert float(train[0].images[:].min()) >= -1 - 1e-6 and float(train[0].images[:].max()) <= 1 + 1e-6  # mean=std=0.5


def test_prompt_image_folder_loader(tmp_path):
    from PIL import Image

    from clfreq.prompt import image_folder_tasks

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for c in ("ant", "bee", "cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
                img.save(tmp_path / split / c / f"{i}.png")
    train, test = image_folder_tasks(tmp_path / "train", tmp_path / "test", classes_per_task=2, image_size=16)
    assert [t.classes for t in train] == [(0, 1), (2, 3)] and [t.classes for t in test] == [(0, 1), (2, 3)]
    assert train[1].images.shape == (6, 3, 16, 16) and test[0].images.shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="classes_per_task"):
        image_folder_tasks(tmp_path / "train", tmp_path / "test", classes_per_task=3, image_size=16)
    (tmp_path / "test" / "eel").mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "test" / "eel" / "0.png")
    with pytest.raises(ValueError, match="same class folders.*eel"):  # indices would silently disagree
        image_folder_tasks(tmp_path / "train", tmp_path / "test", classes_per_task=2, image_size=16)


_RSS_SCRIPT = r"""
import resource, sys, torch
from clfreq.prompt import image_folder_tasks
import torchvision.transforms  # noqa: F401  (imported by the loader anyway; counted in the baseline)
torch.set_num_threads(1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
root = sys.argv[1]
train, test = image_folder_tasks(root + "/train", root + "/test", classes_per_task=10, image_size=224)
n = sum(len(t.labels) for t in train)
assert train[0].images.shape == (1000, 3, 224, 224), train[0].images.shape
seen = 0
for x in train[0].images.batches(64):  # a full pass over one task, as the feature passes read it
    assert x.shape[1:] == (3, 224, 224)
    seen += len(x)
batch = train[9].images[torch.arange(0, 1000, 40)]  # a training mini-batch by index, train transform
assert batch.shape == (25, 3, 224, 224) and seen == 1000
print(n, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_real_size_loader_decodes_per_item_and_stays_under_1gb(tmp_path):
    """A CIFAR-100-layout folder (100 classes, 10 000 train images, 32x32 PNG) at 224x224: held in memory the train
    set would be 10 000 x 3 x 224 x 224 x 4 B = 6.0 GB; decoded per item the process peaks under 1 GB (of which
    importing torch and torchvision take about 0.75 GB here, a batch of 64 at 224x224 about 0.1 GB)."""
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    for split, n in (("train", 100), ("test", 2)):
        for c in range(100):
            folder = tmp_path / split / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.roll(pixels[c], i, axis=0)).save(folder / f"{i}.png", compress_level=0)
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    n, base_kib, max_rss_kib = map(int, out.stdout.split())
    assert n == 10_000
    # what the loader adds over the imports (torch's import alone differs by build: ~0.75 GB for the CPU wheel, more
    # for a CUDA build); decoding per item keeps it to a few batches, against 6.0 GB for the materialised set
    growth = (max_rss_kib - base_kib) * 1024
    assert growth < 512 << 20, f"peak RSS grew {growth / 2**20:.0f} MiB over the imports ({base_kib / 1024:.0f} MiB)"
