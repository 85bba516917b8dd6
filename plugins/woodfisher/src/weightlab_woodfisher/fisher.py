"""Diagonal-Fisher pruning: the OBS saliency with the Fisher replaced by its diagonal."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.params import param
from weightlab.pruners import SELECTIONS, ScorePruner, SelectParams, split_flat


@dataclass
class DiagFisherParams(SelectParams):
    samples: int = param(1000, "N: per-sample gradients averaged into F_ii", min=1)
    selection: str = param("joint", "remove the lowest scores over all layers, or per layer",
                           choices=SELECTIONS)
    memory_budget_gb: float | None = param(None, "memory the computation may plan with (default: "
                                                 "90% of free CUDA memory, 4 GiB on CPU)",
                                           min=0.0, min_exclusive=True)


class DiagFisherPruner(ScorePruner):
    """Diagonal empirical-Fisher pruning (the diagonal baseline of Theis et al. 2018 and of the
    WoodFisher paper): F_ii = (1/N) Σ_n g_n,i² with g_n the per-sample gradient of the
    cross-entropy with the true label (torch.func, in chunks); score w_i² · F_ii — the OBS
    saliency w²/(2[F⁻¹]_ii) when F is diagonal (up to the factor ½). Needs calibration data."""

    name = "diag_fisher"
    summary = "remove the lowest w²·F_ii (diagonal empirical Fisher from per-sample gradients)"
    needs_data = True
    Params = DiagFisherParams

    def scores(self, model, names, masks, data=None):
        import torch  # here, not at the top: listing the pruner must not load torch

        from weightlab_woodfisher.blocks import BlockLayout
        from weightlab_woodfisher.gradients import activation_bytes, per_sample_grads, require_data
        from weightlab_woodfisher.meter import budget_bytes
        from weightlab_woodfisher.plan import plan

        require_data(self.name, data)
        p = self.params
        params = dict(model.named_parameters())
        dev = params[names[0]].device
        sizes = [params[n].numel() for n in names]
        elt = params[names[0]].element_size()
        budget, budget_from = budget_bytes(dev, p.memory_budget_gb)
        no_blocks = BlockLayout(1, 0, [], sizes)  # nothing resident but F_ii
        chunk = plan(sum(sizes), no_blocks, p.samples, elt, activation_bytes(model, data),
                     budget, budget_from)["grad_chunk"]
        fisher_diag = torch.zeros(sum(sizes), device=dev, dtype=params[names[0]].dtype)
        n_used = 0
        with torch.enable_grad():
            for parts in per_sample_grads(model, names, data, p.samples, chunk, masks):
                fisher_diag += torch.cat([g.square().sum(0) for g in parts])
                n_used += parts[0].shape[0]
        fisher_diag /= max(n_used, 1)
        w_flat = torch.cat([params[n].detach().flatten() for n in names])
        return split_flat(w_flat.square() * fisher_diag, names, params)
