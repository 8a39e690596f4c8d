"""WalMaFa network: wavelets vs PyWavelets, shapes, variants, released state-dict layout, gradients."""

import math

import numpy as np
import pytest
import torch

from walmafa import WalMaFa, WalMaFaConfig, create_model, haar_dwt, haar_iwt, list_models
from walmafa.models.walmafa import FEB, FFAB, WMB

TINY = {"dim": 8, "num_blocks": (1, 1, 1), "d_state": 4}


def test_haar_matches_pywavelets_and_inverts():
    pywt = pytest.importorskip("pywt")
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    ll, hl, lh, hh = haar_dwt(x).chunk(4)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar", axes=(-2, -1))
    np.testing.assert_allclose(ll.numpy(), ca, atol=1e-12)
    np.testing.assert_allclose(hl.numpy(), -cv, atol=1e-12)
    np.testing.assert_allclose(lh.numpy(), -ch, atol=1e-12)
    np.testing.assert_allclose(hh.numpy(), cd, atol=1e-12)
    torch.testing.assert_close(haar_iwt(haar_dwt(x)), x, atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        haar_dwt(torch.zeros(1, 1, 5, 4))


def _released_layout(dim: int, nb: tuple, ffn=2.66, d_state=32, d_conv=4) -> dict:
    """Key -> shape of the released ``Walmafa`` state dict, written from the official code's structure."""
    out = {}

    def conv(name, cin, cout, k, groups=1, bias=True):
        out[f"{name}.weight"] = (cout, cin // groups, k, k)
        if bias:
            out[f"{name}.bias"] = (cout,)

    def mamba(name, c, expand):
        di, r = expand * c, math.ceil(c / 16)
        out.update({f"{name}.A_log": (di, d_state), f"{name}.D": (di,), f"{name}.in_proj.weight": (2 * di, c),
                    f"{name}.conv1d.weight": (di, 1, d_conv), f"{name}.conv1d.bias": (di,),
                    f"{name}.x_proj.weight": (r + 2 * d_state, di), f"{name}.dt_proj.weight": (di, r),
                    f"{name}.dt_proj.bias": (di,), f"{name}.out_proj.weight": (c, di)})

    def wmb(name, c):
        h = int(c * ffn)
        for ln in ("norm1", "norm2"):
            out[f"{name}.{ln}.body.weight"] = (c,)
            out[f"{name}.{ln}.body.bias"] = (c,)
        conv(f"{name}.illu.conv1", c + 1, c, 1)
        conv(f"{name}.illu.depth_conv", c, c, 5, groups=c)
        conv(f"{name}.illu.conv2", c, c, 1)
        for rc, k in (("rep_conv1", 3), ("rep_conv2", 1)):
            conv(f"{name}.ffn.{rc}.c", h, h, k, groups=h, bias=False)
            for p in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.ffn.{rc}.bn.{p}"] = (h,)
            out[f"{name}.ffn.{rc}.bn.num_batches_tracked"] = ()
        conv(f"{name}.ffn.project_in", c, h, 1, bias=False)
        conv(f"{name}.ffn.dwconv", h, h, 3, groups=h, bias=False)
        conv(f"{name}.ffn.project_out", h, c, 1, bias=False)
        conv(f"{name}.mb.convb.0", c, 2 * c, 3)
        conv(f"{name}.mb.convb.2", 2 * c, c, 3)
        mamba(f"{name}.mb.model1", c, 2)
        mamba(f"{name}.mb.model2", c, 9)
        conv(f"{name}.mb.smooth", c, c, 3)
        out[f"{name}.mb.ln.weight"] = (c,)
        out[f"{name}.mb.ln.bias"] = (c,)

    def pb(name, c):
        conv(f"{name}.frequency_process.fpre", c, c, 1)
        for p in ("process1", "process2"):
            conv(f"{name}.frequency_process.{p}.0", c, c, 1)
            conv(f"{name}.frequency_process.{p}.2", c, c, 1)
        conv(f"{name}.cat", c, c, 1)

    c = dim
    conv("estimator.conv1", 4, c, 1)
    conv("estimator.depth_conv", c, c, 5, groups=c)
    conv("estimator.conv2", c, 3, 1)
    out["coefficient"] = (4, 2, 8 * c)
    conv("patch_embed.proj", 3, c, 3, bias=False)
    conv("patch_embed_mask.proj", 1, c, 3, bias=False)
    for stage, width, n in (("sim", c, nb[0]), ("decoder_level1_0", 2 * c, nb[0]), ("decoder_level2_0", 4 * c, nb[1]),
                            ("decoder_level3_0", 8 * c, nb[2]), ("decoder_level2_1", 4 * c, nb[1]),
                            ("decoder_level1_1", 2 * c, nb[0])):
        for i in range(n):
            wmb(f"{stage}.{i}", width)
    conv("down_1.body.0", c, c // 2, 3, bias=False)
    conv("down_2.body.0", 2 * c, c, 3, bias=False)
    conv("down_3.body.0", 4 * c, 2 * c, 3, bias=False)
    conv("up3_2.body.0", 8 * c, 16 * c, 3, bias=False)
    conv("up2_1.body.0", 4 * c, 8 * c, 3, bias=False)
    conv("up2_0.body.0", 2 * c, 4 * c, 3, bias=False)
    n = 8 * c
    conv("latent.conv0.0", n, n, 1)
    pb("latent.conv0.1", n)
    for k in ("conv1", "conv2", "conv3"):
        pb(f"latent.{k}", n)
    for k in ("conv4", "conv5", "convout"):
        pb(f"latent.{k}.0", 2 * n)
        conv(f"latent.{k}.1", 2 * n, n, 1)
    out["coefficient_3_2"] = (2, 4 * c)
    out["coefficient_2_1"] = (2, 2 * c)
    out["coefficient_1_0"] = (2, c)
    conv("skip_3_2", 4 * c, 4 * c, 1, bias=False)
    conv("skip_2_1", 2 * c, 2 * c, 1, bias=False)
    conv("skip_1_0", 2 * c, 2 * c, 1, bias=False)
    conv("output", c, 3, 3, bias=False)
    return out


@pytest.mark.parametrize("dim,nb", [(16, (2, 3, 4)), (32, (1, 2, 4))])
def test_released_state_dict_layout_loads_strictly(dim, nb):
    layout = _released_layout(dim, nb)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(3) if s == () else 0.05 * torch.randn(s, generator=g)) for k, s in layout.items()}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    model = WalMaFa.from_released_state_dict({"state_dict": {"module." + k: v for k, v in sd.items()}},
                                             dim=dim, num_blocks=nb, d_state=32)
    own = model.state_dict()
    assert set(own) <= set(layout)  # every key of the model is a released key, loaded unchanged
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k
    unused = set(layout) - set(own)  # exactly what the released forward never reads
    assert unused and all(k == "coefficient" or k.startswith(("patch_embed_mask.", "skip_2_1."))
                          or ".mb.model2." in k or ".illu.conv2." in k for k in unused)
    if dim == 16:  # released training config: 11.63 M parameters with the unused ones, 7.89 M used
        total = sum(torch.Size(s).numel() for k, s in layout.items() if s != () and "running" not in k)
        used = sum(p.numel() for p in create_model("walmafa").parameters())
        assert abs(total / 1e6 - 11.63) < 0.01 and abs(used / 1e6 - 7.89) < 0.01, (total, used)
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 32, 32))
    assert torch.isfinite(y).all()


def test_registry_and_defaults():
    assert {"walmafa", "walmafa_paper", "walmafa_classdefault", "retinex_unet"} <= set(list_models())
    cfg = create_model("walmafa").config
    assert cfg.dim == 16 and cfg.num_blocks == (2, 3, 4) and cfg.mamba_on == "high"
    assert create_model("walmafa_paper", **TINY).config.mamba_on == "low"
    assert create_model("walmafa_classdefault", d_state=4).config.dim == 32
    with pytest.raises(ValueError, match="mamba_on"):
        WalMaFaConfig(mamba_on="middle")
    with pytest.raises(ValueError, match="num_blocks"):
        WalMaFaConfig(num_blocks=(1, 2))
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


@pytest.mark.parametrize("variant", [{"mamba_on": "high"}, {"mamba_on": "low"}, {"token_layout": "pixel"}])
def test_variants_forward_backward(variant):
    torch.manual_seed(0)
    model = create_model("walmafa", **TINY, **variant)
    x = torch.rand(2, 3, 32, 48)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    mamba = model.decoder_level1_0[0].mb.model1
    assert mamba.A_log.grad is not None and mamba.A_log.grad.abs().sum() > 0
    assert mamba.dt_proj.bias.grad.abs().sum() > 0
    if variant.get("mamba_on") == "low":
        assert hasattr(model.sim[0], "high_conv") and not hasattr(model.sim[0], "illu")
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 30, 32))


def test_variants_differ_and_scan_choice_is_equivalent():
    torch.manual_seed(0)
    a = create_model("walmafa", **TINY).eval()
    b = create_model("walmafa", **TINY, scan="sequential").eval()
    b.load_state_dict(a.state_dict())
    c = create_model("walmafa", **TINY, token_layout="pixel").eval()
    c.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    torch.testing.assert_close(ya, yb, atol=1e-4, rtol=1e-4)
    assert (ya - yc).abs().max() > 1e-4  # the token layout changes what the scan sees



def _identity_conv_(conv: torch.nn.Conv2d, bias: float = 0.0) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0] = torch.eye(conv.out_channels)
        conv.bias.fill_(bias)


@pytest.mark.parametrize("w", [8, 7])  # odd widths: irfft2 must be given the original size
def test_feb_polar_recombination_round_trips(w):
    """With identity 1×1 convs (the phase MLP shifted by +π and back so LeakyReLU passes it unchanged), the
    amplitude/phase split, polar recombination and irfft2 give back the input: FEB(x) = x + x."""
    torch.manual_seed(0)
    feb = FEB(4).double()
    _identity_conv_(feb.fpre)
    for proc, shift in ((feb.process1, 0.0), (feb.process2, math.pi)):
        _identity_conv_(proc[0], shift)  # amplitude ≥ 0, phase + π ≥ 0: LeakyReLU is the identity on both
        _identity_conv_(proc[2], -shift)
    x = torch.randn(2, 4, 6, w, dtype=torch.float64)
    torch.testing.assert_close(feb(x), 2 * x, atol=1e-10, rtol=0)


def test_ffab_shape_and_spectral_mixing():
    torch.manual_seed(0)
    ffab = FFAB(8).eval()
    x = torch.zeros(1, 8, 8, 8)
    x[..., 2, 3] = 1.0  # a single impulse: the Fourier units spread it over the whole map
    with torch.no_grad():
        y = ffab(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    spread = (y - y[..., :1, :1]).abs().sum(dim=1)  # changes relative to a far pixel
    assert (spread > 1e-6).float().mean() > 0.5  # a global (frequency-domain) operator, not a local one


@pytest.mark.parametrize("mamba_on,mamba_batch", [("high", 3), ("low", 1)])
def test_mamba_switch_routes_the_bands(mamba_on, mamba_batch):
    """``mamba_on='high'`` (released code) feeds the stacked HL/LH/HH bands to Mamba, ``'low'`` (paper) the LL band;
    the other path is the conv module, and replacing the Mamba path changes the output."""
    torch.manual_seed(0)
    block = WMB(8, WalMaFaConfig(**TINY, mamba_on=mamba_on)).eval()
    seen = []
    block.mb.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape))
    x = torch.randn(2, 8, 8, 12)
    with torch.no_grad():
        y = block(x)
        assert seen == [torch.Size((2 * mamba_batch, 8, 4, 6))]  # n = 2 images: 6 high-band maps or 2 LL maps
        assert hasattr(block, "illu" if mamba_on == "high" else "high_conv")
        block.mb.forward = lambda t: torch.zeros_like(t)
        assert (block(x) - y).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["walmafa", "walmafa_paper"])
def test_every_trainable_parameter_gets_a_gradient(variant):
    """DistributedDataParallel (multi-GPU training) needs a gradient for every trainable parameter: the parameters
    the released code builds but never uses are not built (released checkpoints load through
    ``checkpoint_filter_fn``), and nothing is frozen."""
    torch.manual_seed(0)
    model = create_model(variant, **TINY)
    model(torch.rand(1, 3, 32, 32)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == [] and all(p.requires_grad for p in model.parameters())
    assert not any(".illu.conv2." in n or ".mb.model2." in n for n in model.state_dict())
    with pytest.raises(ValueError, match="keep_unused=True was removed"):
        create_model(variant, **TINY, keep_unused=True)

@pytest.mark.slow
def test_network_can_fit_one_pair():
    """The network learns: 60 Adam steps on one 32×32 pair cut the released loss by > 4× (7.0 → ~0.4 measured)."""
    from walmafa import WalMaFaLoss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    high = torch.rand(1, 3, 32, 32, generator=g) * 0.6 + 0.2
    low = high * 0.15 + 0.02 * torch.rand(1, 3, 32, 32, generator=g)
    model = create_model("walmafa", dim=8, num_blocks=(1, 1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=5e-5)
    crit = WalMaFaLoss()
    losses = []
    for _ in range(60):
        loss = crit(model(low), high)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4


def test_ffab_ablation_switch():
    """``ffab=False`` (an ablation, not a released variant) replaces the latent FFAB by the identity."""
    full = create_model("walmafa", **TINY)
    ablated = create_model("walmafa", **TINY, ffab=False)
    assert isinstance(ablated.latent, torch.nn.Identity)
    n_ffab = sum(p.numel() for p in full.latent.parameters())
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in ablated.parameters()) == n_ffab > 0
    with torch.no_grad():
        assert ablated(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
