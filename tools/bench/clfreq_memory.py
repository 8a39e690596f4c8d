"""FDINet / CLFD cost check: parameters, peak training memory and step time of the rehearsal backbones.

One ER-style training step = forward + backward of a current batch and a replay batch (32 + 32 images, CIFAR size
32x32 by default), plain SGD. For each net (mammoth ResNet-18 host, CLFD's DWT net, the FDINet-style two-branch net):
* parameters (``commons.profiling.count_parameters``), total and backbone-only;
* peak memory with ``commons.profiling.PeakMemory`` — CUDA allocator peak on a GPU, sampled process RSS growth on the
  CPU — each net measured in a fresh subprocess so the allocator starts empty;
* activation memory: bytes of the distinct non-parameter tensors autograd saves for backward in one step (exact,
  device-independent; with params + grads it is the floor of the allocator peak for plain SGD);
* seconds per step (median of the measured steps, after one warm-up step).

    python tools/bench/clfreq_memory.py                     # CPU, nf 64 and 20, writes runs/bench/clfreq_memory
    python tools/bench/clfreq_memory.py --device cuda --nf 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

# a bench script named like its package would shadow it: drop this folder from sys.path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def measure(kind: str, nf: int, size: int, batch: int, steps: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from clfreq.rehearsal.nets import CLFDNet, FDINet, ResNet18, fdinet_nf_for_budget
    from commons.profiling import PeakMemory, Timer, count_parameters

    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(2 * batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (2 * batch,), device=dev)
    # warm the conv/BN kernels up outside the measured region (library workspaces are not the model's memory)
    warm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).to(dev)
    warm(x[:2]).sum().backward()
    del warm
    with PeakMemory(dev) as pm:
        if kind == "resnet18":
            net = ResNet18(10, 3, nf)
        elif kind == "clfd":
            net = CLFDNet(10, 3, nf)
        else:
            nl = fdinet_nf_for_budget(nf)
            net = FDINet(10, 3, nl, nl)
        net = net.to(dev).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        param_ptrs = {p.untyped_storage().data_ptr() for p in net.parameters()}
        saved: dict[int, int] = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_ptrs:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.no_grad():  # the buffer holds what encode() gives (CLFD: half-resolution maps)
            replay = net.encode(x[batch:]).clone()
        times = []
        for s in range(steps + 1):
            with Timer(dev) as tm:
                opt.zero_grad()
                saved.clear()
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    z = net.encode(x[:batch])
                    loss = F.cross_entropy(net.classify(z, y[:batch]), y[:batch])
                    loss = loss + F.cross_entropy(net.classify(replay, None), y[batch:])
                activation_bytes = sum(saved.values())
                loss.backward()
                opt.step()
            if s:
                times.append(tm.seconds)
    bb = (count_parameters(net.features) if hasattr(net, "features")
          else count_parameters(net.low) + count_parameters(net.high))
    return {"net": kind, "nf": nf, "branch_nf": fdinet_nf_for_budget(nf) if kind == "fdinet" else None,
            "params": count_parameters(net), "backbone_params": bb, "peak_bytes": pm.peak_bytes,
            "activation_bytes": activation_bytes, "step_seconds": statistics.median(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nf", type=int, nargs="+", default=[64, 20])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench/clfreq_memory")
    p.add_argument("--one", nargs=2, metavar=("NET", "NF"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="accepted for `make bench`: the defaults are CPU-sized already")
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.one[0], int(a.one[1]), a.size, a.batch, a.steps, a.device)))
        return
    import torch

    from commons.io import save_json
    from commons.reporting import markdown_table

    rows = []
    for nf in a.nf:
        base = None
        for kind in ("resnet18", "clfd", "fdinet"):
            cmd = [sys.executable, __file__, "--one", kind, str(nf), "--size", str(a.size), "--batch", str(a.batch),
                   "--steps", str(a.steps), "--device", a.device]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            base = base or r
            rows.append({"net": kind, "nf": nf if kind != "fdinet" else f"2 x {r['branch_nf']}",
                         "backbone params": f"{r['backbone_params']:,}",
                         "params vs host": f"{100 * (r['backbone_params'] / base['backbone_params'] - 1):+.0f}%",
                         "activations MiB": f"{r['activation_bytes'] / 2**20:.1f}",
                         "act. vs host": f"{100 * (r['activation_bytes'] / base['activation_bytes'] - 1):+.0f}%",
                         "peak MiB (PeakMemory)": f"{r['peak_bytes'] / 2**20:.1f}",
                         "peak vs host": f"{100 * (r['peak_bytes'] / max(base['peak_bytes'], 1) - 1):+.0f}%",
                         "s / step": f"{r['step_seconds']:.3f}", "raw": r})
            print(rows[-1], flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} torch {torch.__version__} threads {torch.get_num_threads()} "
                       f"device {a.device}", "args": vars(a)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "results.json", {"meta": meta, "rows": rows})
    md = (f"Machine: {meta['machine']}; date {meta['date']}; one ER step = {a.batch} current + {a.batch} replay "
          f"images of {a.size}x{a.size}, plain SGD; median of {a.steps} steps after a warm-up.\n\n"
          + markdown_table([{k: v for k, v in r.items() if k != "raw"} for r in rows]))
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
