"""Rehearsal continual learning in mammoth conventions: reservoir buffer, ER / DER++ / ER-ACE, CLFD and FDINet plugins,
Split benchmarks and a resumable trainer that fills a :class:`commons.metrics.AccuracyMatrix` (Class-IL and Task-IL).

Usage::

    from clfreq import ER, DERpp, CLFD, FDINetPlugin, split_digits, train_continual
    bench = split_digits(seed=0)
    result = train_continual(CLFD(DERpp(lr=0.03, alpha=0.1, beta=0.5, buffer_size=50)), bench, epochs=5, seed=0)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .nets import CLFDNet, FDINet, ResNet18

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ buffer
class ReservoirBuffer:
    """mammoth reservoir buffer: after ``n`` offered samples each one is stored with probability ``capacity / n``.

    Stores any named tensors per sample (``examples`` = images or encoded maps, ``labels``, ``logits``, ``task_ids``).
    ``num_seen`` is the reservoir counter (CLFD restores it after refilling; notes §1.4).
    """

    def __init__(self, capacity: int, seed: int = 0):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.num_seen = 0
        self.data: dict[str, torch.Tensor] = {}
        self.gen = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def empty(self) -> None:
        self.data, self.num_seen = {}, 0

    def add(self, **tensors: torch.Tensor) -> None:
        n = next(iter(tensors.values())).shape[0]
        if any(t.shape[0] != n for t in tensors.values()):
            raise ValueError("all tensors passed to ReservoirBuffer.add need the same first dimension")
        for k, t in tensors.items():
            if k not in self.data:
                self.data[k] = torch.zeros((self.capacity,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        for i in range(n):
            if self.num_seen < self.capacity:
                slot = self.num_seen
            else:
                r = int(self.gen.integers(0, self.num_seen + 1))
                slot = r if r < self.capacity else -1
            self.num_seen += 1
            if slot >= 0:
                for k, t in tensors.items():
                    self.data[k][slot] = t[i].detach()

    def sample(self, size: int) -> dict[str, torch.Tensor]:
        m = len(self)
        if m == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = torch.from_numpy(self.gen.choice(m, size=min(size, m), replace=False))
        return {k: v[idx.to(v.device)] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"data": {k: v.cpu() for k, v in self.data.items()}, "num_seen": self.num_seen,
                "capacity": self.capacity, "rng": self.gen.bit_generator.state}

    def load_state_dict(self, s: dict, device=None) -> None:
        self.capacity, self.num_seen = s["capacity"], s["num_seen"]
        self.data = {k: v.to(device) if device is not None else v for k, v in s["data"].items()}
        self.gen.bit_generator.state = s["rng"]


# ------------------------------------------------------------------------------------------------ methods
class Rehearsal:
    """Base rehearsal method (mammoth ``ContinualModel``): plain SGD, minibatch replay of ``minibatch`` samples.

    Subclasses define :meth:`loss`. A plugin (CLFD, FDINet) changes :meth:`build_net`, the buffer capacity and the
    hooks.
    """

    name = "base"

    def __init__(self, lr: float = 0.1, buffer_size: int = 50, minibatch: int = 32, nf: int = 20):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        self.lr, self.buffer_size, self.minibatch, self.nf = lr, buffer_size, minibatch, nf
        self.plugin: str | None = None
        self.buffer_factor = 1

    # set by setup()
    def setup(self, num_classes: int, in_channels: int, classes_per_task: int, epochs: int, device, seed: int):
        self.num_classes, self.cpt, self.epochs, self.device = num_classes, classes_per_task, epochs, device
        self.net = self.build_net(num_classes, in_channels).to(device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.lr)
        self.buffer = ReservoirBuffer(self.buffer_size * self.buffer_factor, seed=seed)
        self.task = 0
        return self

    def build_net(self, num_classes, in_channels):
        return ResNet18(num_classes, in_channels, self.nf)

    @property
    def label(self) -> str:
        return self.name if self.plugin is None else f"{self.plugin}-{self.name}"

    # hooks (1-based epochs, as mammoth's training.py)
    def begin_task(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.task = t

    def begin_epoch(self, e: int) -> None: ...
    def end_epoch(self, e: int) -> None: ...
    def end_task(self, t: int) -> None: ...

    def store(self, z, y, logits, t):
        self.buffer.add(examples=z, labels=y, logits=logits.detach(), task_ids=torch.full_like(y, t))

    def observe(self, x: torch.Tensor, y: torch.Tensor, backend=None) -> float:
        self.net.train()
        self.opt.zero_grad()
        z = self.net.encode(x)
        logits = self.net.classify(z, y)
        loss = self.loss(logits, y)
        (backend.backward(loss) if backend is not None else loss.backward())
        self.opt.step()
        self.store(z.detach(), y, logits, self.task)
        return float(loss.detach())

    def replay(self):
        b = self.buffer.sample(self.minibatch)
        return b, self.net.classify(b["examples"], None)

    def loss(self, logits, y):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "buffer": self.buffer.state_dict(),
                "task": self.task}

    def load_state_dict(self, s: dict) -> None:
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])
        self.buffer.load_state_dict(s["buffer"], self.device)
        self.task = s["task"]


class ER(Rehearsal):
    """Experience Replay: CE(current) + CE(buffer)."""

    name = "er"

    def loss(self, logits, y):
        loss = F.cross_entropy(logits, y)
        if len(self.buffer):
            b, out = self.replay()
            loss = loss + F.cross_entropy(out, b["labels"])
        return loss


class DERpp(Rehearsal):
    """DER++ (Buzzega et al. 2020): CE(cur) + α·MSE(logits_buf, stored logits) + β·CE(buf), two independent draws."""

    name = "der++"

    def __init__(self, lr: float = 0.03, alpha: float = 0.1, beta: float = 0.5, **kw):
        super().__init__(lr=lr, **kw)
        self.alpha, self.beta = alpha, beta

    def loss(self, logits, y):
        loss = F.cross_entropy(logits, y)
        if len(self.buffer):
            b, out = self.replay()
            loss = loss + self.alpha * F.mse_loss(out, b["logits"])
            b, out = self.replay()
            loss = loss + self.beta * F.cross_entropy(out, b["labels"])
        return loss


class ERACE(Rehearsal):
    """ER-ACE (Caccia et al. 2022): current CE over (classes in batch ∪ unseen classes) for t>0, plus CE(buffer)."""

    name = "er-ace"

    def __init__(self, lr: float = 0.03, **kw):
        super().__init__(lr=lr, **kw)

    def loss(self, logits, y):
        if self.task > 0:
            mask = torch.zeros_like(logits[0], dtype=torch.bool)
            mask[y.unique()] = True
            mask[(self.task + 1) * self.cpt:] = True  # not yet seen
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits, y)
        if self.task > 0 and len(self.buffer):
            b, out = self.replay()
            loss = loss + F.cross_entropy(out, b["labels"])
        return loss


METHODS = {"er": ER, "der++": DERpp, "er-ace": ERACE}


# ------------------------------------------------------------------------------------------------ plugins
def CLFD(method: Rehearsal, kwta_keep: float = 0.6, buffer_factor: int = 4, selection: bool = True) -> Rehearsal:
    """Wrap a rehearsal method with CLFD (NeurIPS 2024; notes §1.2–1.5), in place; returns the method.

    Frequency encoder + ResNet on half resolution, buffer of ``buffer_factor``× encoded maps (same bytes as the raw
    buffer), encoder frozen from the last epoch of task 0 (buffer emptied then refilled, counter restored), k-WTA and
    the class-aware selection schedule. Pitfall decisions (notes §1.8): counts updated with ``index_add_`` on device;
    no replay crop augmentation (so no padding fill needed); similarities over the explicit old-class set; counts
    never reset (as the official code).
    """
    if not isinstance(method, Rehearsal):
        raise TypeError(f"CLFD wraps a rehearsal method (ER, DERpp, ERACE), got {type(method).__name__}")
    if method.plugin is not None:
        raise ValueError(f"method already has plugin {method.plugin!r}")
    method.plugin, method.buffer_factor = "clfd", buffer_factor
    base_setup, base_begin_task = method.setup, method.begin_task
    st: dict = {}

    def build_net(num_classes, in_channels):
        return CLFDNet(num_classes, in_channels, method.nf, kwta_keep)

    def setup(*a, **kw):
        out = base_setup(*a, **kw)
        net, d = method.net, method.net.dim
        st["reserved"] = int(d * 1.1 * kwta_keep)
        st["init"] = torch.zeros(d, device=net.select_probs.device)
        st["init"][: st["reserved"]] = 1.0
        st["rho"] = torch.zeros(method.num_classes, device=net.select_probs.device)
        st["rho"][: method.cpt] = 2.0
        st["ll"] = {}
        st["seen_task0"] = 0
        net.use_class_mask = selection
        return out

    def begin_task(t, x, y):
        base_begin_task(t, x, y)
        st["x"], st["y"] = x, y

    def classes(t):
        return list(range(t * method.cpt, (t + 1) * method.cpt))

    def collect_ll():
        net = method.net
        with torch.no_grad():
            ll = torch.cat([net.encoder(st["x"][i:i + 256].to(method.device))[1].flatten(1)
                            for i in range(0, len(st["x"]), 256)])
        for c in classes(method.task):
            st["ll"][c] = ll[st["y"].to(ll.device) == c].sum(0)

    def begin_epoch(e):
        net, t = method.net, method.task
        if t == 0:
            if e == 1:
                net.select_probs[classes(0)] = st["init"]
            if e == method.epochs:
                st["seen_task0"] = method.buffer.num_seen
                for p in net.encoder.parameters():
                    p.requires_grad_(False)
                method.buffer.empty()
        elif e == 1:
            net.select_probs[classes(t)] = kwta_keep

    def end_epoch(e):
        net, t = method.net, method.task
        if (t == 0 and e == method.epochs) or (t > 0 and e == 1):
            collect_ll()
        if t > 0 and e == 1 and selection:
            old = [c for c in range(t * method.cpt) if c in st["ll"]]
            if old:
                lo = torch.stack([st["ll"][c] for c in old])
                for c in classes(t):
                    s = F.cosine_similarity(st["ll"][c][None], lo, dim=1)
                    jmin, jmax = old[int(s.argmin())], old[int(s.argmax())]
                    m = (s + 1).mean()
                    fmin = m / (s.min() + 1).clamp_min(1e-8)
                    fmax = (s.max() + 1) / m.clamp_min(1e-8)
                    a_min, a_max = net.select_counts[jmin], net.select_counts[jmax]
                    p_min = torch.exp(-a_min * fmin / a_min.max().clamp_min(1e-8))
                    p_max = 1 - torch.exp(-a_max * fmax / a_max.max().clamp_min(1e-8))
                    net.select_probs[c] = 0.5 * p_min + 0.5 * p_max
                    st["rho"][c] = 2.0
        if selection and e > 0.4 * method.epochs:
            seen = (t + 1) * method.cpt
            a = net.select_counts[:seen]
            probs = 1 - torch.exp(-st["rho"][:seen, None] * a / a.max(1, keepdim=True).values.clamp_min(1e-8))
            counted = a.sum(1) > 0
            net.select_probs[:seen][counted] = probs[counted]

    def end_task(t):
        if t == 0:
            method.buffer.num_seen = max(method.buffer.num_seen, st["seen_task0"] + method.buffer.num_seen)

    method.build_net, method.setup, method.begin_task = build_net, setup, begin_task
    method.begin_epoch, method.end_epoch, method.end_task = begin_epoch, end_epoch, end_task
    method.clfd_state = st
    return method


def FDINetPlugin(method: Rehearsal, nf_low: int | None = None, nf_high: int | None = None) -> Rehearsal:
    """Replace the host's ResNet-18 by the FDINet-style two-branch net (default widths: ≈22 % of the host's params)."""
    from .nets import fdinet_nf_for_budget

    if not isinstance(method, Rehearsal):
        raise TypeError(f"FDINet wraps a rehearsal method (ER, DERpp, ERACE), got {type(method).__name__}")
    if method.plugin is not None:
        raise ValueError(f"method already has plugin {method.plugin!r}")
    method.plugin = "fdinet"
    nl = nf_low or fdinet_nf_for_budget(method.nf)
    nh = nf_high or nl
    method.build_net = lambda num_classes, in_channels: FDINet(num_classes, in_channels, nl, nh)
    return method


PLUGINS = {"clfd": CLFD, "fdinet": FDINetPlugin}


def create_method(name: str, plugin: str | None = None, **kw) -> Rehearsal:
    """Registry: ``create_method("der++", plugin="clfd", buffer_size=50)``."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    if plugin not in (None, "none", *PLUGINS):
        raise ValueError(f"plugin must be one of {sorted(PLUGINS)} or None, got {plugin!r}")
    m = METHODS[name](**kw)
    return PLUGINS[plugin](m) if plugin not in (None, "none") else m


def list_methods() -> list[str]:
    return sorted(METHODS)


# mammoth best args (utils/best_args.py; notes §1.6): plain SGD, batch 32, 50 epochs (Tiny ER/DER++ 100)
BEST_ARGS = {
    ("split-cifar10", 50): {"er": {"lr": 0.1}, "der++": {"lr": 0.03, "alpha": 0.1, "beta": 0.5},
                            "er-ace": {"lr": 0.03}},
    ("split-cifar10", 125): {"er": {"lr": 0.1}, "der++": {"lr": 0.03, "alpha": 0.2, "beta": 0.5},
                             "er-ace": {"lr": 0.03}},
    ("split-tinyimagenet", 50): {"er": {"lr": 0.1}, "der++": {"lr": 0.03, "alpha": 0.1, "beta": 0.5},
                                 "er-ace": {"lr": 0.03}},
    ("split-tinyimagenet", 125): {"er": {"lr": 0.03}, "der++": {"lr": 0.03, "alpha": 0.1, "beta": 0.5},
                                  "er-ace": {"lr": 0.03}},
}
BEST_EPOCHS = {"split-cifar10": 50, "split-tinyimagenet": 100, "split-cifar100": 50}


# ------------------------------------------------------------------------------------------------ benchmarks
@dataclass
class Benchmark:
    """Tensors per task (already normalised): ``train[t] = (x, y)``, ``test[t] = (x, y)``; labels remapped so task t
    holds classes ``t*cpt .. (t+1)*cpt-1``."""

    name: str
    train: list
    test: list
    classes_per_task: int
    in_channels: int = 3
    class_order: list = field(default_factory=list)

    @property
    def num_tasks(self) -> int:
        return len(self.train)

    @property
    def num_classes(self) -> int:
        return self.num_tasks * self.classes_per_task


def _split(name, xtr, ytr, xte, yte, cpt, seed, order=None) -> Benchmark:
    classes = sorted(set(ytr.tolist()))
    if len(classes) % cpt:
        raise ValueError(f"classes_per_task={cpt} does not divide {len(classes)} classes")
    if order is None:
        order = list(np.random.default_rng(seed).permutation(classes)) if seed is not None else classes
    remap = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(order)] = torch.arange(len(order))
    ytr, yte = remap[ytr], remap[yte]
    tr, te = [], []
    for t in range(len(order) // cpt):
        lo, hi = t * cpt, (t + 1) * cpt
        m, n = (ytr >= lo) & (ytr < hi), (yte >= lo) & (yte < hi)
        tr.append((xtr[m], ytr[m]))
        te.append((xte[n], yte[n]))
    return Benchmark(name, tr, te, cpt, xtr.shape[1], [int(c) for c in order])


def split_digits(image_size: int = 16, classes_per_task: int = 2, seed: int | None = None,
                 test_fraction: float = 0.2) -> Benchmark:
    """Embedded default: scikit-learn digits (commons), 8×8 bilinearly resized to ``image_size`` (16: the DWT gives
    8×8 maps), grey replicated to 3 channels, normalised with the training mean/std; 5 tasks × 2 classes in label
    order (``seed=None``, the mammoth convention) or a seeded class order."""
    from commons.data import load_digits_arrays, stratified_split

    if image_size % 2 or image_size < 8:
        raise ValueError(f"image_size must be even and ≥ 8, got {image_size}")
    imgs, labels = load_digits_arrays()
    x = torch.from_numpy(imgs)[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.from_numpy(labels)
    tr, te = stratified_split(labels, test_fraction, seed=0)
    tr, te = torch.as_tensor(np.asarray(tr)), torch.as_tensor(np.asarray(te))
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    return _split("split-digits", x[tr], y[tr], x[te], y[te], classes_per_task, seed)


_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)),
          "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
          "tinyimagenet": ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821))}


def _to_tensor(ds, stats):
    xs = torch.stack([torch.as_tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255 for img, _ in ds])
    ys = torch.tensor([int(t) for _, t in ds])
    m, s = torch.tensor(stats[0])[:, None, None], torch.tensor(stats[1])[:, None, None]
    return (xs - m) / s, ys


def split_cifar(root: str | Path, name: str = "cifar10", classes_per_task: int | None = None,
                seed: int | None = None) -> Benchmark:
    """Split CIFAR-10 (5×2) / CIFAR-100 (10×10) from torchvision files under ``root`` (no download), normalised with
    the mammoth statistics. No crop/flip augmentation is applied by the trainer (documented deviation)."""
    from commons.data import cifar

    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    xtr, ytr = _to_tensor(cifar(name, root, train=True), _STATS[name])
    xte, yte = _to_tensor(cifar(name, root, train=False), _STATS[name])
    cpt = classes_per_task or (2 if name == "cifar10" else 10)
    return _split(f"split-{name}", xtr, ytr, xte, yte, cpt, seed)


def split_tinyimagenet(root: str | Path, classes_per_task: int = 20, seed: int | None = None) -> Benchmark:
    """Split Tiny-ImageNet (10×20) from the standard layout: ``root/train/<wnid>/images/*.JPEG`` and
    ``root/val/images`` + ``root/val/val_annotations.txt``."""
    from PIL import Image

    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val" / "val_annotations.txt").is_file():
        raise ValueError(f"{root} is not a Tiny-ImageNet folder "
                         "(needs train/<wnid>/images and val/val_annotations.txt)")
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    tr = [(Image.open(f).convert("RGB"), index[w]) for w in wnids for f in sorted((root / "train" / w / "images")
                                                                                  .glob("*.JPEG"))]
    te = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            te.append((Image.open(root / "val" / "images" / parts[0]).convert("RGB"), index[parts[1]]))
    xtr, ytr = _to_tensor(tr, _STATS["tinyimagenet"])
    xte, yte = _to_tensor(te, _STATS["tinyimagenet"])
    return _split("split-tinyimagenet", xtr, ytr, xte, yte, classes_per_task, seed)


# ------------------------------------------------------------------------------------------------ trainer
@torch.no_grad()
def evaluate(method: Rehearsal, bench: Benchmark, upto: int, batch: int = 512) -> tuple[list[float], list[float]]:
    """Class-IL and Task-IL accuracy on tasks 0..upto (Task-IL masks logits to the task's classes)."""
    net, cpt = method.net, bench.classes_per_task
    net.eval()
    cil, til = [], []
    for t in range(upto + 1):
        x, y = bench.test[t]
        c = k = 0
        for i in range(0, len(x), batch):
            out = net(x[i:i + batch].to(method.device))[:, : bench.num_classes]
            yy = y[i:i + batch].to(method.device)
            c += int((out.argmax(1) == yy).sum())
            masked = torch.full_like(out, float("-inf"))
            masked[:, t * cpt:(t + 1) * cpt] = out[:, t * cpt:(t + 1) * cpt]
            k += int((masked.argmax(1) == yy).sum())
        cil.append(c / len(x))
        til.append(k / len(x))
    return cil, til


def train_continual(method: Rehearsal, bench: Benchmark, epochs: int = 5, batch_size: int = 32, seed: int = 0,
                    device: str = "cpu", out_dir: str | Path | None = None, resume: bool = False,
                    progress: bool = False, backend=None, on_task_end=None) -> dict:
    """Train ``method`` over ``bench`` task by task; returns the Class-IL/Task-IL accuracy matrices and metrics.

    With ``out_dir``, the full state (net, optimiser, buffer, RNG, matrices) is saved atomically after every epoch
    (``commons.io.save_training_state``) and ``resume=True`` continues from it. ``backend`` is an optional
    ``commons.device.TrainingBackend`` (``backward`` is routed through it; accelerate DDP wraps the net).
    """
    from tqdm.auto import tqdm

    from commons.device import seed_everything
    from commons.io import load_training_state, save_training_state
    from commons.metrics import AccuracyMatrix
    from commons.profiling import PeakMemory, count_parameters

    if not isinstance(method, Rehearsal):
        raise TypeError(f"method must be a Rehearsal method (create_method(...)), got {type(method).__name__}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    seed_everything(seed)
    dev = torch.device(backend.device if backend is not None else device)
    method.setup(bench.num_classes, bench.in_channels, bench.classes_per_task, epochs, dev, seed)
    T = bench.num_tasks
    cil_m, til_m = AccuracyMatrix(T), AccuracyMatrix(T)
    state_path = Path(out_dir) / "state.pt" if out_dir is not None else None
    start_task, start_epoch, train_seconds = 0, 1, 0.0
    gen = torch.Generator().manual_seed(seed)
    if resume and state_path is not None:
        s = load_training_state(state_path)
        if s is not None:
            method.load_state_dict(s["method"])
            if "clfd" in s:
                method.clfd_state.update(s["clfd"])
            start_task, start_epoch, train_seconds = s["task"], s["epoch"], s["train_seconds"]
            cil_m.matrix, til_m.matrix = np.array(s["cil"], dtype=float), np.array(s["til"], dtype=float)
            gen.set_state(s["gen"])
            if start_task > 0 or start_epoch > 1:
                if start_task < T and start_epoch == 1:
                    pass
                if start_task == 0 and start_epoch > epochs:
                    start_task, start_epoch = 1, 1
                if method.plugin == "clfd" and start_task > 0:
                    for p in method.net.encoder.parameters():
                        p.requires_grad_(False)
            logger.info("resuming at task %d epoch %d", start_task, start_epoch)
    with PeakMemory(dev) as pm:
        for t in range(start_task, T):
            x, y = bench.train[t]
            method.begin_task(t, x, y)
            e0 = start_epoch if t == start_task else 1
            for e in range(e0, epochs + 1):
                t0 = time.perf_counter()
                method.begin_epoch(e)
                perm = torch.randperm(len(x), generator=gen)
                bar = tqdm(range(0, len(x), batch_size), desc=f"{method.label} task {t + 1}/{T} ep {e}",
                           disable=not progress, leave=False)
                for i in bar:
                    idx = perm[i:i + batch_size]
                    loss = method.observe(x[idx].to(dev), y[idx].to(dev), backend)
                    bar.set_postfix(loss=f"{loss:.3f}")
                method.end_epoch(e)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                train_seconds += time.perf_counter() - t0
                if e == epochs:
                    method.end_task(t)
                    cil, til = evaluate(method, bench, t)
                    for j in range(t + 1):
                        cil_m.set(t, j, cil[j])
                        til_m.set(t, j, til[j])
                    if on_task_end is not None:
                        on_task_end(t, cil_m, til_m)
                if state_path is not None and (backend is None or backend.is_main_process):
                    nt, ne = (t + 1, 1) if e == epochs else (t, e + 1)
                    s = {"method": method.state_dict(), "task": nt, "epoch": ne, "train_seconds": train_seconds,
                         "cil": cil_m.matrix.tolist(), "til": til_m.matrix.tolist(), "gen": gen.get_state()}
                    if method.plugin == "clfd":
                        s["clfd"] = dict(method.clfd_state)
                    save_training_state(state_path, s)
    bb = method.net.features if hasattr(method.net, "features") else None
    backbone_params = (count_parameters(bb) if bb is not None
                       else count_parameters(method.net.low) + count_parameters(method.net.high))
    return {
        "method": method.label, "benchmark": bench.name, "seed": seed, "epochs": epochs,
        "class_il": cil_m.average_accuracy(), "task_il": til_m.average_accuracy(),
        "forgetting": cil_m.forgetting(), "bwt": cil_m.backward_transfer(),
        "task_il_forgetting": til_m.forgetting(),
        "per_task_class_il": [cil_m.average_accuracy(i) for i in range(T)],
        "cil_matrix": cil_m.to_list(), "til_matrix": til_m.to_list(),
        "train_seconds": train_seconds, "peak_memory_bytes": pm.peak_bytes,
        "params": count_parameters(method.net), "backbone_params": backbone_params,
        "buffer_capacity": method.buffer.capacity,
    }
