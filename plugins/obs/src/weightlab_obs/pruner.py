"""The ``obs`` pruner: layer-wise OBS (OBC / SparseGPT), sequential over the layers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from weightlab.components import Pruner
from weightlab.errors import UsageError
from weightlab.params import param
from weightlab.pruners import SelectParams

from weightlab_obs.pattern import UNSTRUCTURED, check_pattern, parse_pattern

METHODS = ("sparsegpt", "exact")


@dataclass
class ObsParams(SelectParams):
    pattern: str = param(UNSTRUCTURED, "'unstructured' (each layer at the target sparsity) or "
                                       "'N:M': N of every M consecutive input weights zero, e.g. "
                                       "'2:4' (then the sparsity must be N/M)",
                         check=check_pattern)
    method: str = param("sparsegpt", "sparsegpt: one pass over the columns with the Cholesky "
                                     "factor of H⁻¹ (scales); exact: ExactOBS, one weight at a "
                                     "time per row (O(rows·d³), small layers)", choices=METHODS)
    damp: float = param(0.01, "λ as a fraction of mean diag(H), added to the diagonal of H "
                              "(SparseGPT's percdamp)", min=0.0)
    block: int = param(128, "sparsegpt: columns per block (mask selection and lazy batch "
                            "updates)", min=1)
    samples: int = param(1000, "calibration images the layer Hessians are taken over", min=1)
    sequential: bool = param(True, "take each layer's inputs from the model with the layers "
                                   "before it already pruned (OBC, SparseGPT); false: all from "
                                   "the dense model")
    row_batch: int = param(64, "exact: rows solved at once (memory row_batch · d² floats)",
                           min=1)


class ObsPruner(Pruner):
    """Layer-wise optimal brain surgeon: Optimal Brain Compression / ExactOBS (Frantar &
    Alistarh, NeurIPS 2022) in the scalable form of SparseGPT (Frantar & Alistarh, ICML 2023).
    Each chosen conv/linear layer is pruned on its own to minimize its reconstruction error
    ‖WX − ŴX‖² on calibration inputs X, with the Hessian H = 2XXᵀ/n (conv: im2col rows):

    - scores w_q² / [H⁻¹]_qq, row-wise OBS updates δ = −(w_q/[H⁻¹]_qq)·H⁻¹_{:,q} of the
      surviving weights of the same row (``method=sparsegpt``: column by column with the upper
      Cholesky factor of H⁻¹, masks chosen per block of ``block`` columns; ``method=exact``:
      ExactOBS, the cheapest weight one at a time, H⁻¹ downdated after each);
    - **sequential**: the layers are pruned in the order the forward pass calls them, and each
      layer's inputs are collected from the model with every earlier layer already pruned (as
      OBC and SparseGPT do), so each layer also compensates the errors before it
      (``sequential=false``: all inputs from the dense model; then ``analyze`` computes every H
      once for a sweep);
    - **uniform sparsity**: every layer loses exactly round(s · n_layer) weights (weights
      already masked stay removed and count); OBC's non-uniform allocation is not implemented.
      ``exact`` spreads a layer's zeros evenly over its rows; ``sparsegpt`` over its column
      blocks, rows free within a block;
    - ``pattern=N:M``: in every row, N of every M consecutive input weights (conv: along input
      channels at one kernel position) are zero, chosen by the same saliency; ``sparsity``
      must then be N/M.

    Needs calibration data (``samples`` training images; the model runs in eval mode).
    Removed weights end exactly 0. Which layers: as ``magnitude`` and ``woodfisher`` —
    every conv/linear weight and attention's input projections (Q, K, V groups, each on its own
    input) unless ``modules``/``exclude``/``skip_first``/``skip_last`` say
    otherwise. ``last_report`` lists per layer the relative reconstruction error
    ‖WX − ŴX‖²/‖WX‖² on the calibration inputs, the input rows n and the seconds.

    Example::

        obs = registry.create("pruners", "obs", {"pattern": "2:4"})
        masks = obs.prune(net, 0.5, masks={}, data=bundle.loader("calibration",
                                                                   num_samples=1000))
    """

    name = "obs"
    summary = "layer-wise OBS (OBC/SparseGPT): sequential, unstructured or N:M, OBS updates"
    needs_data = True
    Params = ObsParams
    last_report: dict[str, Any] | None = None

    def chosen(self, model) -> list[str]:
        from weightlab import pruning

        p = self.params
        return pruning.prunable_names(model, p.modules, p.exclude, p.skip_first, p.skip_last,
                                      attention=True)

    def _targets(self, sparsity: float) -> tuple[int, int] | None:
        from weightlab import pruning

        pruning.target_zeros(sparsity, 1)  # validates the range
        nm = parse_pattern(self.params.pattern)
        if nm is not None and abs(sparsity - nm[0] / nm[1]) > 1e-6:
            raise UsageError(f"obs: pattern {self.params.pattern} removes {nm[0]} of every "
                             f"{nm[1]} weights (sparsity {nm[0] / nm[1]:g}); got sparsity "
                             f"{sparsity:g}")
        return nm

    def _setup(self, model, masks, data):
        import torch
        from weightlab import pruning
        from weightlab.checkpoint import apply_masks

        from weightlab_obs.layers import Projection, batches, check_supported, execution_order

        if data is None:
            raise UsageError("pruner 'obs' needs calibration data: pass --data NAME (and "
                             "--data-dir) or a loader")
        names = self.chosen(model)
        old = pruning.full_masks(model, names, masks)
        apply_masks(model, old)
        modules = dict(model.named_modules())
        # attention's input projections are bare parameters: their layer is a Projection
        layers = {n: Projection.of(modules, n) or modules[n.removesuffix(".weight")]
                  for n in names}
        for n, m in layers.items():
            check_supported(n, m)
        probe = next(batches(data, 1, next(model.parameters()).device,
                             next(model.parameters()).dtype), None)
        if probe is None:
            raise UsageError("obs: the calibration data is empty")
        order, calls = execution_order(model, layers, probe)
        if missing := [n for n in order if calls[n] == 0]:
            raise UsageError(f"obs: {', '.join(missing)} never ran in the forward pass; leave "
                             f"it out with exclude=")
        dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 \
            else torch.float32
        return order, old, layers, calls, dtype

    def _hessians(self, model, order, layers, calls, data, dtype) -> dict[str, Any]:
        from weightlab_obs.layers import hessian

        out = {}
        for n in order:
            t0 = time.perf_counter()
            h, rows, images = hessian(model, layers[n], data, self.params.samples, dtype,
                                      stop_early=calls[n] == 1)
            out[n] = {"H": h, "rows": rows, "images": images,
                      "seconds": time.perf_counter() - t0}
        return out

    def analyze(self, model, masks, data=None):
        """With ``sequential=false``: every layer's H from the model as given (they do not
        depend on the sparsity), for a sweep; None when sequential (each H depends on how the
        layers before were pruned)."""
        if self.params.sequential:
            return None
        from weightlab import pruning

        order, old, layers, calls, dtype = self._setup(model, masks, data)
        stats = {"order": order,
                 "hessians": self._hessians(model, order, layers, calls, data, dtype)}
        return pruning.Analysis.of(self, model, order, old, stats)

    def prune(self, model, sparsity, masks, data=None, analysis=None):
        import torch
        from weightlab import pruning
        from weightlab.errors import WeightlabError

        nm = self._targets(sparsity)
        order, old, layers, calls, dtype = self._setup(model, masks, data)
        if analysis is not None:
            if not isinstance(analysis, pruning.Analysis):
                raise WeightlabError(f"obs: analysis must be what obs.analyze returned, got "
                                     f"{type(analysis).__name__}")
            analysis.check(self, model, order, old)
            hessians = analysis.stats["hessians"]
        elif not self.params.sequential:
            hessians = self._hessians(model, order, layers, calls, data, dtype)
        else:
            hessians = {}
        report: dict[str, Any] = {"sequential": self.params.sequential,
                                  "method": self.params.method, "layers": {}}
        new = {}
        for n in order:
            stats = hessians.get(n) or self._hessians(model, [n], layers, calls, data,
                                                      dtype)[n]
            t0 = time.perf_counter()
            with torch.no_grad():
                new[n], err = self._prune_layer(layers[n], stats["H"], old[n], sparsity, nm,
                                                dtype, n)
            report["layers"][n] = {"rows": stats["rows"], "images": stats["images"],
                                   "error": err, "sparsity": 1 - float(new[n].float().mean()),
                                   "seconds": stats["seconds"] + time.perf_counter() - t0}
        report["samples"] = max(r["images"] for r in report["layers"].values())
        self.last_report = report
        return {n: new[n] for n in layers}

    def _prune_layer(self, module, h, keep, sparsity, nm, dtype, name):
        """Solve every group of the layer, write the weights; (new mask, relative error)."""
        import torch
        from weightlab import pruning

        from weightlab_obs.layers import from_matrices, weight_matrices
        from weightlab_obs.pattern import split_target
        from weightlab_obs.solver import SolverError, exact_obs, reconstruction_error, sparsegpt

        p = self.params
        w = module.weight
        mats = weight_matrices(module, w.detach().to(dtype))
        keeps = weight_matrices(module, keep)
        g = mats.shape[0]
        zeros = [None] * g
        if nm is None:
            total = max(pruning.target_zeros(sparsity, w.numel()), int((~keep).sum()))
            zeros = split_target(total, [mats[i].numel() for i in range(g)],
                                 [int((~keeps[i]).sum()) for i in range(g)])
        if nm is not None and mats.shape[2] % nm[1]:
            raise UsageError(f"obs: {name}: {mats.shape[2]} input columns are not a multiple "
                             f"of M = {nm[1]} (conv columns are kernel positions × input "
                             f"channels; leave the layer out with exclude= or skip_first=true)")
        out_w, out_k, num, den = [], [], 0.0, 0.0
        for i in range(g):
            try:
                if p.method == "exact":
                    sol = exact_obs(mats[i], h[i], keeps[i], zeros=zeros[i], nm=nm,
                                    damp=p.damp, row_batch=p.row_batch)
                else:
                    sol = sparsegpt(mats[i], h[i], keeps[i], zeros=zeros[i], nm=nm,
                                    block=p.block, damp=p.damp)
            except SolverError as e:
                raise UsageError(f"obs: {name}: {e}") from None
            rel = reconstruction_error(mats[i], sol.weight, h[i])
            base = float(torch.einsum("ri,ij,rj->", mats[i], h[i], mats[i]))
            num, den = num + rel * base, den + base
            out_w.append(sol.weight)
            out_k.append(sol.keep)
        new_keep = from_matrices(module, torch.stack(out_k), w.shape)
        new_w = from_matrices(module, torch.stack(out_w), w.shape)
        w.copy_(torch.where(new_keep, new_w.to(w.dtype), torch.zeros_like(w)))
        return new_keep, (num / den if den > 0 else 0.0)
