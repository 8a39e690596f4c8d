"""FDINet plugin: the host's ResNet-18 replaced by the two-branch frequency-decomposition net
(:class:`clfreq.rehearsal.nets.FDINet`)."""

from __future__ import annotations

from ..base import Rehearsal
from ..nets import FDINet, fdinet_nf_for_budget
from .base import PluginMixin, attach


class FDINetMixin(PluginMixin):
    """Builds :class:`~clfreq.rehearsal.nets.FDINet` instead of the host's ResNet-18; everything else is the host's."""

    plugin = "fdinet"
    display = "FDINet"

    def __init__(self, *args, nf_low: int | None = None, nf_high: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.configure_plugin(nf_low, nf_high)

    def configure_plugin(self, nf_low: int | None = None, nf_high: int | None = None) -> None:
        """Branch widths; default: the width giving ≈22 % of the host's backbone parameters, for both branches."""
        self.nf_low = nf_low or fdinet_nf_for_budget(self.nf)
        self.nf_high = nf_high or self.nf_low

    def build_net(self, num_classes, in_channels):
        return FDINet(num_classes, in_channels, self.nf_low, self.nf_high)


def FDINetPlugin(method: Rehearsal, nf_low: int | None = None, nf_high: int | None = None) -> Rehearsal:
    """Replace the host's ResNet-18 by the FDINet-style two-branch net (default widths: ≈22 % of the host's params)."""
    return attach(method, FDINetMixin, nf_low=nf_low, nf_high=nf_high)
