"""Feature statistics of several models from ONE pass over calibration data.

For every requested space, the features of the K models at the space's feature points are
laid side by side (K·C columns; each sample and spatial position is one row; several feature
points of a space pool their rows) and reduced on the device to a count, a mean (K·C) and a
covariance (K·C × K·C). Batches are merged with Chan et al.'s pairwise update, so nothing but
the running sums is kept:

    δ = m_b − m,  n' = n + n_b,  m' = m + δ·n_b/n',  M2' = M2 + M2_b + δδᵀ·n·n_b/n'

with M2 = Σ (x − m)(x − m)ᵀ. Activation matching, ZipIt! and CCA read the blocks they need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.graph.spaces import FeatureGraph
from weightlab.graph.taps import feature_reader


@dataclass
class FeatureStats:
    """Pooled statistics of one space: ``mean`` (K·C,), ``cov`` (K·C, K·C), float64;
    model k's channels are columns k·C … (k+1)·C − 1."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor
    models: int

    @property
    def size(self) -> int:
        return self.mean.numel() // self.models

    @property
    def cov(self) -> torch.Tensor:
        return self.m2 / max(self.count, 1)

    def std(self, eps: float = 1e-12) -> torch.Tensor:
        return self.cov.diagonal().clamp_min(0).add(eps).sqrt()

    def corr(self, eps: float = 1e-12) -> torch.Tensor:
        """Pearson correlation, corr_ij = cov_ij / (σ_i σ_j); a constant channel (a dead
        ReLU) correlates 0 with everything."""
        s = self.std(eps)
        return self.cov / (s[:, None] * s[None, :])

    def inner(self) -> torch.Tensor:
        """The uncentered second moment E[x xᵀ] = cov + m mᵀ (Git Re-Basin's E[A Bᵀ])."""
        return self.cov + torch.outer(self.mean, self.mean)

    def block(self, i: int, j: int, which: str = "cov") -> torch.Tensor:
        """The (model i, model j) C × C block of ``cov``, ``corr`` or ``inner``."""
        m = {"cov": self.cov, "corr": self.corr, "inner": self.inner}[which]
        m = m() if callable(m) else m
        c = self.size
        return m[i * c:(i + 1) * c, j * c:(j + 1) * c]


@torch.no_grad()
def collect_feature_stats(models: Sequence[nn.Module], graph: FeatureGraph,
                          loader: Iterable, samples: int | None = None,
                          spaces: Sequence[int] | None = None) -> dict[int, FeatureStats]:
    """Statistics per space (default: every free space with feature points) over the first
    ``samples`` inputs of ``loader`` (all when None). Models run in eval mode."""
    ids = [s.id for s in graph.free_spaces()] if spaces is None else list(spaces)
    ids = [i for i in ids if graph[i].feature_points]
    points = [p for i in ids for p in graph[i].feature_points]
    readers = [feature_reader(m, graph, points) for m in models]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    k = len(models)
    stats: dict[int, FeatureStats] = {}
    seen = 0
    try:
        for x, _ in loader:
            if samples is not None:
                if seen >= samples:
                    break
                x = x[:samples - seen]
            seen += len(x)
            feats = [read(x)[1] for read in readers]
            for i in ids:
                sp = graph[i]
                units = sp.size if sp.groups > 1 and sp.groups == sp.size else None  # rigid
                for p in sp.feature_points:
                    rows = [_rows(f[p], units) for f in feats]
                    _update(stats, i, torch.cat(rows, dim=1), k)  # (n, K·C)
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    return stats


def _rows(f: torch.Tensor, units: int | None = None) -> torch.Tensor:
    """(N, C, *spatial) → (N·positions, C): every sample and position is one observation.

    A rigid head space (RoPE, head-first q/k/v blocks) has one unit per head, and its points
    read the heads' channels, C = units · dh, head-major. Channels stay in place within a
    head, so channel c of head i meets only channel c of head j: each of the dh channels is one
    more observation of its head, (N, units·dh, …) → (N·positions·dh, units). Then
    E[a_i b_j] = (1/dh) Σ_c E[a_ic b_jc], the mean over the channels of the matched heads'
    channel-by-channel products (the rigid analogue of a channel space's E[a_i b_j])."""
    if units is not None and f.shape[1] != units:
        if f.shape[1] % units:
            raise ValueError(f"features of {f.shape[1]} channels for a space of {units} units")
        f = f.unflatten(1, (units, f.shape[1] // units)).movedim(2, -1)  # (N, units, …, dh)
    return f.movedim(1, -1).reshape(-1, f.shape[1]) if f.dim() > 2 else f


def _update(stats: dict[int, FeatureStats], i: int, x: torch.Tensor, k: int) -> None:
    n_b = x.shape[0]
    x = x.float()
    m_b = x.mean(0)
    xc = x - m_b
    m2_b = (xc.T @ xc).double()  # centred per batch: float32 is accurate here
    m_b = m_b.double()
    st = stats.get(i)
    if st is None:
        stats[i] = FeatureStats(n_b, m_b, m2_b, k)
        return
    n = st.count
    delta = m_b - st.mean
    total = n + n_b
    st.mean = st.mean + delta * (n_b / total)
    st.m2 = st.m2 + m2_b + torch.outer(delta, delta) * (n * n_b / total)
    st.count = total
