"""Per-channel statistics on calibration data: running float64 moments on the device (no feature
is stored), and the one shared pass that measures every reference model at once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from weightlab.errors import DataError, UsageError

from weightlab_repair.places import Place


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()))
    return p.device, p.dtype


def calibration_batches(data, samples: int, model: nn.Module, who: str) -> Iterator[torch.Tensor]:
    """The first ``samples`` inputs of ``data`` (batches of (x, y)), on the model's device and
    in its floating dtype."""
    if data is None:
        raise UsageError(f"{who}: needs calibration data (a loader of training batches, e.g. "
                         f"--data with --calibration-samples)")
    dev, dtype = model_device_dtype(model)
    seen = 0
    for batch in data:
        if seen >= samples:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x[: samples - seen]
        if len(x) == 0:
            continue
        seen += len(x)
        yield x.to(dev, dtype) if x.is_floating_point() else x.to(dev)
    if seen == 0:
        raise DataError(f"{who}: the calibration data is empty")


def first_batch(data, samples: int, model: nn.Module, who: str) -> torch.Tensor:
    for x in calibration_batches(data, samples, model, who):
        return x
    raise AssertionError("unreachable: calibration_batches raises on empty data")


class ChannelMoments:
    """Running per-channel mean and M2 = Σ(z − mean)² over samples and positions. Each batch is
    reduced by ``torch.var_mean`` in the feature's own dtype (a numerically stable one-batch
    reduction, no float64 copy of the features); batches are combined in float64 with Chan,
    Golub & LeVeque's update, so no feature is stored and long passes lose no precision."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self.mean: torch.Tensor | float = 0.0
        self.m2: torch.Tensor | float = 0.0

    def add(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate one batch; return that batch's own mean and (biased) variance."""
        d = self.dim % z.dim()
        var_b, mean_b = torch.var_mean(z.detach(), [i for i in range(z.dim()) if i != d],
                                       correction=0)
        var_b, mean_b = var_b.double(), mean_b.double()
        n = z.numel() // z.shape[d]
        total = self.count + n
        delta = mean_b - self.mean
        # M2_ab = M2_a + M2_b + δ²·n_a·n_b/(n_a + n_b); mean_ab = mean_a + δ·n_b/(n_a + n_b)
        self.m2 = self.m2 + var_b * n + delta.square() * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total
        return mean_b, var_b

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.count


@contextlib.contextmanager
def evaluating(*models: nn.Module):
    """Eval mode (norms use their running statistics, dropout off), restored afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def broadcast(v: torch.Tensor, z: torch.Tensor, dim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against ``z`` along ``dim``."""
    shape = [1] * z.dim()
    shape[dim] = -1
    return v.view(shape)


def _recorder(moments: ChannelMoments):
    def hook(module, inputs, output):
        moments.add(output[0] if isinstance(output, tuple) else output)  # attention: (out, w)

    return hook


@torch.no_grad()
def reference_moments(references: Sequence[nn.Module], places: Sequence[Sequence[Place]],
                      batches: Iterator[torch.Tensor]) -> list[list[ChannelMoments]]:
    """Statistics of every place in every reference from ONE pass: each calibration batch is
    forwarded through all references before the next is drawn."""
    moments = [[ChannelMoments(p.channel_dim) for p in ps] for ps in places]
    handles = []
    for ps, ms in zip(places, moments):
        for p, m in zip(ps, ms):
            handles.append(p.point.register_forward_hook(_recorder(m)))
    try:
        with evaluating(*references):
            for x in batches:
                for ref in references:
                    ref(x)
    finally:
        for h in handles:
            h.remove()
    return moments
