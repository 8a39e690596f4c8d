"""The integer 2-D convolution :class:`QConv2dInt`: im2col of the int8 activation codes, then the GEMM of
:class:`~.linear.QLinearInt`."""

from __future__ import annotations

import torch

from .. import kernels
from ..kernels.conv import conv_output_size, conv_patches
from .linear import QLinearInt, _out_dtype
from .spec import IntLinearSpec

__all__ = ["QConv2dInt", "layer_class"]


class QConv2dInt(QLinearInt):
    """Integer 2-D convolution (``groups=1``): static per-tensor activation quantization (channels-last, smoothing per
    input channel), im2col of the int8 codes with zero-point padding (:func:`vqcore.kernels.conv_patches`), then the
    integer GEMM of :class:`QLinearInt` over ``K = C·kh·kw`` (weights ``[O, C·kh·kw]``, the conv weight flattened).
    Input ``[B, C, H, W]``, output ``[B, O, Ho, Wo]`` (contiguous NCHW) in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if x.dim() != 4 or x.shape[1] != spec.in_channels:
            raise ValueError(f"expected input [B, {spec.in_channels}, H, W], got {tuple(x.shape)}")
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
        ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            raise ValueError(f"input {h}x{w} is too small for kernel {kh}x{kw} with padding {ph}x{pw}")
        act = self._static_act(x.permute(0, 2, 3, 1).reshape(-1, c))
        r = self._row()
        codes = act.codes.view(b, h, w, c)
        if ph or pw:  # border = the code of 0.0 (the zero point), built on the device (no host sync)
            zp8 = self.act_zero_point[r : r + 1].to(torch.int8)
            padded = zp8.view(1, 1, 1, 1).expand(b, h + 2 * ph, w + 2 * pw, c).clone()
            padded[:, ph : ph + h, pw : pw + w] = codes
            codes = padded
        patches = conv_patches(codes, (kh, kw), (sh, sw), (0, 0), (dh, dw))
        mp = patches.shape[0]
        xs = self.act_scale[r : r + 1].expand(mp).contiguous()
        xz = self.act_zero_point[r : r + 1].expand(mp).contiguous()
        rowsum = patches.sum(dim=-1, dtype=torch.int32) if spec.weight_zero_point else xz
        y = self._gemm(kernels.QuantizedActivation(patches, xs, xz, rowsum), None, _out_dtype(x))
        return y.view(b, ho, wo, self.out_features).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}, {s.out_features}, kernel={s.kernel_size}, stride={s.stride}, padding={s.padding}"
                f"{f', dilation={s.dilation}' if s.dilation != (1, 1) else ''}; " + super().extra_repr())  # fmt: skip


def layer_class(spec: IntLinearSpec) -> type[QLinearInt]:
    """The integer layer class a spec describes."""
    return QConv2dInt if spec.is_conv else QLinearInt
