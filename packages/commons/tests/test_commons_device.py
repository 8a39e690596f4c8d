import random

import numpy as np
import pytest
import torch

from commons.device import TrainingBackend, autocast, resolve_device, resolve_dtype, seed_everything


def test_resolve_device_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")).type == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "tpu"])
def test_resolve_device_rejects_malformed(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


def test_resolve_device_unavailable_cuda_is_clear():
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_resolve_device_type_error():
    with pytest.raises(TypeError):
        resolve_device(3)


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("FP16") is torch.float16
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="floating"):
        resolve_dtype(torch.int32)


def test_autocast_bf16_on_cpu_changes_matmul_dtype():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16"), autocast("cpu", "fp16"):
        pass


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first
    with pytest.raises(TypeError):
        seed_everything("1")
    with pytest.raises(ValueError):
        seed_everything(-1)


@pytest.mark.parametrize("use_accelerate", [False, True])
def test_training_backend_trains_a_model(use_accelerate):
    seed_everything(0)
    backend = TrainingBackend(cpu=True, use_accelerate=use_accelerate)
    assert backend.uses_accelerate is use_accelerate
    assert backend.num_processes == 1 and backend.is_main_process
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = backend.prepare(model, opt)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    losses = []
    for _ in range(50):
        opt.zero_grad()
        with backend.autocast():
            loss = torch.nn.functional.mse_loss(model(x.to(backend.device)), y.to(backend.device))
        backend.backward(loss)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert backend.gather(torch.ones(2)).shape == (2,)
    assert isinstance(backend.unwrap(model), torch.nn.Linear)
    backend.wait()


def test_training_backend_bad_precision():
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingBackend(mixed_precision="fp8")


def _linear_problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(16, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return model, x, y


def test_fp16_single_process_scales_the_loss_and_unscales_before_clipping_and_stepping():
    model, x, y = _linear_problem()
    ref = torch.nn.Linear(3, 1)
    ref.load_state_dict(model.state_dict())
    torch.nn.functional.mse_loss(ref(x), y).backward()
    ref_grads = [p.grad.clone() for p in ref.parameters()]
    ref_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in ref_grads]))

    backend = TrainingBackend(mixed_precision="fp16", cpu=True, use_accelerate=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = backend.prepare(model, opt)
    backend.backward(torch.nn.functional.mse_loss(model(x), y))
    scale = backend._scaler.get_scale()
    assert scale > 1  # gradients are loss-scaled after backward ...
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g * scale)
    norm = backend.clip_grad_norm_(model.parameters(), max_norm=1e6)  # ... and unscaled before clipping
    torch.testing.assert_close(norm, ref_norm)
    before = [p.detach().clone() for p in model.parameters()]
    backend.step(opt)
    for p, b, g in zip(model.parameters(), before, ref_grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)  # the step used the true gradient


@pytest.mark.parametrize("use_accelerate", [False, True])
def test_clip_grad_norm_clips_and_returns_the_norm(use_accelerate):
    if use_accelerate:
        pytest.importorskip("accelerate")
    model, x, y = _linear_problem()
    backend = TrainingBackend(cpu=True, use_accelerate=use_accelerate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = backend.prepare(model, opt)
    backend.backward(100.0 * torch.nn.functional.mse_loss(model(x), y))
    full = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    norm = backend.clip_grad_norm_(model.parameters(), max_norm=0.5)
    torch.testing.assert_close(norm, full)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert full > 0.5 and abs(float(clipped) - 0.5) < 1e-4
    backend.step(opt)
    with pytest.raises(ValueError, match="max_norm"):
        backend.clip_grad_norm_(model.parameters(), max_norm=0)


def test_open_run_dir_creates_refuses_and_resumes(tmp_path):
    backend = TrainingBackend(cpu=True, use_accelerate=False)
    assert backend.open_run_dir(None) is None
    run = backend.open_run_dir(tmp_path / "exp")
    assert run.path.is_dir() and not run.resumed
    run.save_state({"step": 3})
    with pytest.raises(FileExistsError, match="resume=True"):
        backend.open_run_dir(tmp_path / "exp")
    again = backend.open_run_dir(tmp_path / "exp", resume=True)
    assert again.resumed and again.load_state()["step"] == 3
    with pytest.raises(TypeError, match="run_dir"):
        backend.open_run_dir(3)
