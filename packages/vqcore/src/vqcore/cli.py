"""``vqcore`` command line: quantize a diffusers model directory or a zoo model, inspect methods, convert to integers.

    vqcore methods
    vqcore quantize --model zoo:moving-digits-dit --method vidit-q --w-bits 4 --a-bits 8 --out runs/q/w4a8
    vqcore quantize --model path/to/transformer --class CogVideoXTransformer3DModel --calib calib.safetensors \
        --method rtn ...
    vqcore convert runs/q/w4a8 --model zoo:moving-digits-dit --out runs/q/w4a8-int
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch


def _load_model(spec: str, cls_name: str | None):
    if spec.startswith("zoo:"):
        from . import zoo

        try:
            return zoo.load(spec[4:])
        except ValueError as err:
            raise SystemExit(f"--model: {err}") from None
    path = Path(spec)
    if not path.is_dir():
        raise SystemExit(f"--model: {spec!r} is neither 'zoo:<name>' nor a diffusers model directory")
    if not cls_name:
        raise SystemExit("--class is required with a model directory (e.g. CogVideoXTransformer3DModel, UNet2DModel)")
    try:
        import diffusers
    except ImportError:
        raise SystemExit("--model: loading a diffusers model directory needs the optional dependency diffusers "
                         "(pip install diffusers)") from None
    cls = getattr(diffusers, cls_name, None)
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
        raise SystemExit(f"--class: diffusers has no model class {cls_name!r}")
    try:
        return cls.from_pretrained(str(path))
    except Exception as err:  # noqa: BLE001 - corrupt safetensors/config.json, missing files: one line, not a trace
        raise _ModelLoadError(f"--model: could not load a {cls_name} from {path}: {_one_line(err)}") from err


class _ModelLoadError(Exception):
    """A model directory that diffusers could not load (shown as one line; the cause with ``-v``)."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _zoo_calibration(model, samples: int, steps: int, seed: int, progress: bool = True):
    """Capture block and model inputs along full-precision DDIM trajectories of a zoo model."""
    from . import zoo
    from .calib import Capture

    labels = torch.arange(samples) % 10
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        zoo.sample(model, labels, num_steps=steps, seed=seed, progress=progress)
    return cap.result


def _a_bits(text: str) -> int | None:
    if text.lower() in ("none", "fp"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int in [2, 8] or 'fp', got {text!r}") from None


def cmd_methods(args) -> int:
    from .methods import list_methods

    print("\n".join(list_methods()))
    return 0


def _quantize_options(args) -> dict:
    """Validate everything that needs no model before the model is loaded or any calibration data is sampled."""
    from .methods import get_method

    for flag, bits in (("--w-bits", args.w_bits), ("--a-bits", args.a_bits)):
        if bits is not None and not 2 <= bits <= 8:
            raise SystemExit(f"{flag} must be in [2, 8], got {bits}")
    try:
        impl = get_method(args.method)
    except ValueError as err:
        raise SystemExit(f"--method: {err}") from None
    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as err:
        raise SystemExit(f"--options must be a JSON object, e.g. '{{\"iters\": 500}}': {err}") from None
    if not isinstance(options, dict):
        raise SystemExit(f"--options must be a JSON object, got {type(options).__name__}")
    try:
        impl.check_options(options)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--options: {err}") from None
    if "progress" in impl.option_names() and "progress" not in options:
        options["progress"] = not args.no_progress
    if args.calib and not Path(args.calib).is_file():
        raise SystemExit(f"--calib: {args.calib} is not a file")
    return options


def cmd_quantize(args) -> int:
    import vqcore

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"--out {out} exists; pass --overwrite to replace it")
    options = _quantize_options(args)
    calib = None
    if args.calib:  # read before the model: a bad file fails fast
        from .calib import load_calibration

        try:  # safetensors, or a torch file read with weights_only=True: nothing in the file is executed
            calib = load_calibration(args.calib)
        except ValueError as err:
            raise SystemExit(f"--calib: {err}") from None
    model = _load_model(args.model, args.model_class).eval()
    if calib is None and args.model.startswith("zoo:"):
        calib = _zoo_calibration(model, args.calib_samples, args.calib_steps, args.seed, not args.no_progress)
    qmodel = vqcore.quantize(model, method=args.method, w_bits=args.w_bits, a_bits=args.a_bits, calib=calib,
                             seed=args.seed, **options)  # bad calibration data / model: one line (main)
    vqcore.save(qmodel, out, overwrite=args.overwrite)
    print(qmodel.vqcore_report.summary())
    print(f"saved to {out}")
    return 0


def cmd_convert(args) -> int:
    import vqcore

    from .convert import int_weight_bytes

    ckpt = Path(args.checkpoint)
    missing = [n for n in ("config.json", "model.safetensors") if not (ckpt / n).is_file()]
    if missing:  # before the model is loaded
        raise SystemExit(f"checkpoint: {ckpt} is not a vqcore quantized checkpoint (no {' or '.join(missing)}; "
                         "write one with `vqcore quantize --out`)")
    model = _load_model(args.model, args.model_class).eval()
    fp16_bytes = int_weight_bytes(model) // next(model.parameters()).element_size() * 2  # before load() swaps layers
    qmodel = vqcore.load(args.checkpoint, model)
    int_model = vqcore.convert(qmodel)
    vqcore.save_converted(int_model, args.out)
    stored = int_weight_bytes(int_model)
    print(f"integer model saved to {args.out}; linear + conv weights {stored / 2**20:.2f} MiB "
          f"({stored / max(fp16_bytes, 1):.3f} of fp16)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # forwarded whole, so `vqcore bench --help` shows the benchmark's own options
        from .zoo.bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="vqcore", description="Post-training quantization of diffusion models.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the registered methods").set_defaults(fn=cmd_methods)

    q = sub.add_parser("quantize", help="quantize a model and save it (safetensors + config.json)")
    q.add_argument("--model", required=True, help="zoo:<name> or a diffusers model directory")
    q.add_argument("--class", dest="model_class", default=None, help="diffusers class for a model directory")
    q.add_argument("--method", default="rtn", help="a registered method (`vqcore methods`): rtn, vidit-q, "
                   "q-diffusion, q-vdit, s2q-vdit, mpq-dm")
    q.add_argument("--w-bits", type=int, default=8, help="weight bits, 2-8 (the method's mixed-precision preset "
                   "may keep some layers at 8 bit or FP; the report says which)")
    q.add_argument("--a-bits", type=_a_bits, default=8, help="activation bits, or 'fp' to keep them unquantized")
    q.add_argument("--calib", default=None, help="calibration file: vqcore.calib.save_calibration(...) (safetensors; "
                   "a CalibrationSet from Capture or a list of forward-kwargs dicts / input tensors), or a torch.save "
                   "file of tensors and containers (read with weights_only=True); zoo models capture their own when "
                   "omitted")
    q.add_argument("--calib-samples", type=int, default=8, help="zoo models: sampling trajectories to capture")
    q.add_argument("--calib-steps", type=int, default=10, help="zoo models: DDIM steps per trajectory")
    q.add_argument("--options", default=None, help='method options as JSON, e.g. \'{"iters": 500}\'')
    q.add_argument("--out", required=True, help="directory to write (model.safetensors + config.json, atomic)")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    q.add_argument("--seed", type=int, default=0, help="seeds calibration sampling and the method")
    q.add_argument("--no-progress", action="store_true", help="hide the progress bars (sampling, optimisation)")
    q.set_defaults(fn=cmd_quantize)

    c = sub.add_parser("convert", help="turn a saved fake-quant model into integer kernels and save it")
    c.add_argument("checkpoint")
    c.add_argument("--model", required=True)
    c.add_argument("--class", dest="model_class", default=None)
    c.add_argument("--out", required=True)
    c.set_defaults(fn=cmd_convert)

    sub.add_parser("bench", add_help=False,
                   help="quality benchmark on the model zoo (same options as tools/bench/vqcore_quality.py; "
                        "`vqcore bench --help`)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (_ModelLoadError, ValueError, TypeError, OSError, ImportError, KeyError, RuntimeError) as err:
        # what a user can cause (missing optional dependency or file, corrupt checkpoint or calibration file, a
        # checkpoint of another model): one line naming it and a non-zero exit; -v shows the traceback
        if args.verbose:
            raise
        msg = str(err) if isinstance(err, _ModelLoadError) else _one_line(err)
        raise SystemExit(f"vqcore {args.command}: {msg} (-v shows the traceback)") from None


if __name__ == "__main__":
    sys.exit(main())
