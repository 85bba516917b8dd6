"""BatchNorm statistics reset (Izmailov et al. 2018, SWA's ``bn_update``; the REPAIR baseline)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from weightlab.components import Normalizer
from weightlab.errors import UsageError
from weightlab.lazy import no_grad

from weightlab_repair.repair import SAMPLES


class ResetBN(Normalizer):
    """Recompute every BatchNorm's running statistics on calibration data (SWA, Izmailov et al.
    2018; "reset BN" in REPAIR, Jordan et al. 2023): running_mean = mean over the calibration
    batches of each batch's channel mean, running_var = mean of each batch's unbiased channel
    variance (PyTorch's cumulative average, momentum=None), from one pass with the BatchNorms in
    train mode and no gradients. The other modules stay in eval mode (dropout off), so the
    statistics are those of the network used at test time. ``references`` and ``weights`` are
    not used. Returns a deep copy; a model without BatchNorm is an error.
    """

    name = "reset_bn"
    summary = "recompute every BatchNorm's running statistics on calibration data"
    needs_data = True

    @dataclass
    class Params:
        samples: int = SAMPLES

    @no_grad
    def apply(self, model, references, weights, data, graph=None):
        from torch.nn.modules.batchnorm import _BatchNorm

        from weightlab_repair.stats import calibration_batches

        net = copy.deepcopy(model)
        bns = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not bns:
            raise UsageError(f"reset_bn: {type(model).__name__} has no BatchNorm layer with "
                             f"running statistics; use repair, rescale or reshift instead")
        batches = calibration_batches(data, self.params.samples, net, self.name)
        was_training, momenta = net.training, [bn.momentum for bn in bns]
        net.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over all batches
            bn.train()
        try:
            for x in batches:
                net(x)
        finally:
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
            net.train(was_training)
        return net
