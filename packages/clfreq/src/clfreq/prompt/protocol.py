"""The class-incremental evaluation protocol for the prompt learners, and the benchmarks they run on.

After training task i, every task j ≤ i is evaluated on its own test images with class-IL prediction (over all seen
classes). The accuracy matrix gives final average accuracy, average incremental accuracy (mean over i of the average
accuracy after task i), forgetting and BWT (``commons.metrics.AccuracyMatrix``). The old-vs-new split — accuracy on the
last task's classes vs on all earlier classes after the final task — measures the recency bias that PrePrompt's
feature translation targets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from commons.metrics import AccuracyMatrix

from ..lazy import LazyImages, prompt_transforms
from .learners import IncrementalLearner, TaskData

__all__ = ["StreamResult", "run_stream", "split_digits_tasks", "split_fractals_tasks", "image_folder_tasks",
           "cifar100_tasks"]


@dataclass
class StreamResult:
    matrix: AccuracyMatrix
    final_accuracy: float
    average_incremental_accuracy: float
    forgetting: float
    backward_transfer: float
    old_accuracy: float
    new_accuracy: float
    task_id_accuracy: float | None
    train_seconds: float
    per_task: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "final_accuracy": self.final_accuracy,
            "average_incremental_accuracy": self.average_incremental_accuracy,
            "forgetting": self.forgetting,
            "backward_transfer": self.backward_transfer,
            "old_accuracy": self.old_accuracy,
            "new_accuracy": self.new_accuracy,
            "task_id_accuracy": self.task_id_accuracy,
            "train_seconds": self.train_seconds,
            "accuracy_matrix": self.matrix.to_list(),
        }


def run_stream(learner: IncrementalLearner, train_tasks: list[TaskData], test_tasks: list[TaskData],
               progress: bool = False, on_task_end: Callable[[int, IncrementalLearner, dict], None] | None = None,
               resume: dict | None = None) -> StreamResult:
    """Train ``learner`` task by task and evaluate every seen task after each one.

    ``on_task_end(i, learner, progress_state)`` is called after each task (the CLI checkpoints there);
    ``resume`` is such a ``progress_state`` (from a checkpoint) to continue after its last finished task.
    """
    if len(train_tasks) != len(test_tasks) or not train_tasks:
        raise ValueError("train_tasks and test_tasks must be non-empty lists of the same length")
    matrix = AccuracyMatrix(len(train_tasks))
    train_seconds = 0.0
    per_task: list[dict] = []
    first = 0
    if resume is not None:
        learner.load_training_state(resume["learner"])
        matrix.matrix[:] = np.asarray(resume["matrix"], dtype=float)
        train_seconds, per_task, first = resume["train_seconds"], list(resume["per_task"]), resume["next_task"]
    for i, task in enumerate(train_tasks):
        if i < first:
            continue
        start = time.perf_counter()
        stats = learner.fit_task(task, progress=progress)
        train_seconds += time.perf_counter() - start
        for j in range(i + 1):
            matrix.set(i, j, learner.accuracy(test_tasks[j].images, test_tasks[j].labels))
        per_task.append({**stats, "average_accuracy": matrix.average_accuracy(i)})
        if on_task_end is not None:
            on_task_end(i, learner, {"learner": learner.training_state(), "matrix": matrix.matrix.tolist(),
                                     "train_seconds": train_seconds, "per_task": per_task, "next_task": i + 1})
    last = len(train_tasks) - 1
    old = float(np.mean(matrix.matrix[last, :last])) if last > 0 else float("nan")
    task_id_acc = None
    if hasattr(learner, "predict_task"):
        hits = sum(int((learner.predict_task(t.images) == t.task_id).sum()) for t in test_tasks)
        task_id_acc = hits / sum(len(t.labels) for t in test_tasks)
    return StreamResult(
        matrix=matrix,
        final_accuracy=matrix.average_accuracy(),
        average_incremental_accuracy=float(np.mean([matrix.average_accuracy(i) for i in range(last + 1)])),
        forgetting=matrix.forgetting(),
        backward_transfer=matrix.backward_transfer(),
        old_accuracy=old,
        new_accuracy=float(matrix.matrix[last, last]),
        task_id_accuracy=task_id_acc,
        train_seconds=train_seconds,
        per_task=per_task,
    )


def _tasks_from_tensors(images: torch.Tensor, labels: torch.Tensor, classes_per_task: int,
                        class_order: list[int]) -> list[TaskData]:
    tasks = []
    for t in range(len(class_order) // classes_per_task):
        classes = tuple(class_order[t * classes_per_task:(t + 1) * classes_per_task])
        mask = torch.isin(labels, torch.tensor(classes))
        subset = images.subset(mask) if isinstance(images, LazyImages) else images[mask]
        tasks.append(TaskData(t, classes, subset, labels[mask]))
    return tasks


def split_digits_tasks(image_size: int = 32, classes_per_task: int = 2, test_fraction: float = 0.3, seed: int = 0
                       ) -> tuple[list[TaskData], list[TaskData]]:
    """Split Digits for ViTs: scikit-learn digits at ``image_size``, RGB, normalised with mean = std = 0.5.

    Classes in natural order (class k → task k // classes_per_task, as the official scripts), a stratified
    train/test split drawn from ``seed``.
    """
    from commons.data import DigitsDataset, stratified_split

    ds = DigitsDataset(image_size=image_size, channels=3, normalize=True)
    train_idx, test_idx = stratified_split(ds.targets.numpy(), test_fraction, seed=seed)
    order = list(range(10))
    train = _tasks_from_tensors(ds.images[train_idx], ds.targets[train_idx], classes_per_task, order)
    test = _tasks_from_tensors(ds.images[test_idx], ds.targets[test_idx], classes_per_task, order)
    return train, test


def split_fractals_tasks(classes_per_task: int = 10, num_classes: int = 100, train_per_class: int = 100,
                         test_per_class: int = 20, image_size: int = 32, seed: int = 0
                         ) -> tuple[list[TaskData], list[TaskData]]:
    """Split Fractals for ViTs (``commons.data.fractal_classes``, 10 tasks × 10 classes by default), normalised
    with mean = std = 0.5, classes in label order. The classes are disjoint from the shipped ViT's pre-training IFS
    but of the same family (procedural fractals), so prompt methods on that backbone start with matching features.
    """
    from commons.data import fractal_classes

    kw = dict(num_classes=num_classes, size=image_size, seed=seed, normalize=True)
    train = fractal_classes(per_class=train_per_class, train=True, **kw)
    test = fractal_classes(per_class=test_per_class, train=False, **kw)
    order = list(range(num_classes))
    return (_tasks_from_tensors(train.images_float(), train.targets, classes_per_task, order),
            _tasks_from_tensors(test.images_float(), test.targets, classes_per_task, order))


def cifar100_tasks(root: str | Path, image_size: int = 224, classes_per_task: int = 10, download: bool = False,
                   num_workers: int = 0, color_jitter: bool = True) -> tuple[list[TaskData], list[TaskData]]:
    """Split CIFAR-100 (10 tasks × 10 classes, natural class order) from torchvision's files under ``root``.

    Images stay uint8 (150 MB) and are decoded and transformed per item (:class:`clfreq.lazy.LazyImages`) with the
    official transforms at ``image_size`` (:func:`clfreq.lazy.prompt_transforms`: train RandomResizedCrop(scale
    0.05–1) + flip (+ brightness jitter, PrePrompt's CIFAR scripts), test Resize + CenterCrop); ``download=True``
    fetches the data through torchvision.
    """
    from commons.data import cifar

    out = []
    for train in (True, False):
        ds = cifar("cifar100", root, train=train, download=download)
        images = LazyImages(np.asarray(ds.data), prompt_transforms(image_size, train, color_jitter and train),
                            num_workers=num_workers)
        out.append(_tasks_from_tensors(images, torch.tensor(ds.targets), classes_per_task, list(range(100))))
    return out[0], out[1]


def image_folder_tasks(train_root: str | Path, test_root: str | Path, classes_per_task: int, image_size: int = 224,
                       num_workers: int = 0) -> tuple[list[TaskData], list[TaskData]]:
    """A class-per-folder dataset (e.g. ImageNet-R split into train/ and test/ folders) as a class-incremental stream.

    Classes are sorted by folder name; both roots must hold the same class folders and their number must be
    divisible by ``classes_per_task`` (checked before any image is read). Files are decoded per item with the
    official train / test transforms (:func:`clfreq.lazy.prompt_transforms`).
    """
    from commons.data import ImageFolderDataset

    if not isinstance(classes_per_task, int) or classes_per_task < 1:
        raise ValueError(f"classes_per_task must be a positive int, got {classes_per_task!r}")
    sets = [ImageFolderDataset(root) for root in (train_root, test_root)]
    if sets[0].classes != sets[1].classes:  # class indices come from the sorted folder names of each root
        diff = sorted(set(sets[0].classes) ^ set(sets[1].classes))
        raise ValueError(f"train_root and test_root must hold the same class folders, got {len(sets[0].classes)} "
                         f"and {len(sets[1].classes)} classes (differing: {diff[:3]})")
    n = len(sets[0].classes)
    if n % classes_per_task:
        raise ValueError(f"{n} classes cannot be split into tasks of classes_per_task={classes_per_task}")
    order = list(range(n))
    out = []
    for ds, train in zip(sets, (True, False)):
        images = LazyImages([p for p, _ in ds.samples], prompt_transforms(image_size, train), num_workers=num_workers)
        out.append(_tasks_from_tensors(images, ds.targets, classes_per_task, order))
    return out[0], out[1]
