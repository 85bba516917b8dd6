"""BatchNorm statistics reset (Izmailov et al. 2018, SWA's ``bn_update``; the REPAIR baseline)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from weightlab.components import Normalizer
from weightlab.errors import UsageError

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

    def apply(self, model, references, weights, data, graph=None):
        from weightlab.batchnorm import has_batchnorm, reset_bn

        from weightlab_repair.stats import calibration_batches

        if not has_batchnorm(model):
            raise UsageError(f"reset_bn: {type(model).__name__} has no BatchNorm layer with "
                             f"running statistics; use repair, rescale or reshift instead")
        net = copy.deepcopy(model)
        return reset_bn(net, calibration_batches(data, self.params.samples, net, self.name))
