"""WoodFisher (Singh & Alistarh, NeurIPS 2020, "WoodFisher: Efficient Second-Order
Approximation for Neural Network Compression"): one-shot OBS pruning with a block-diagonal
empirical Fisher inverse.

Stages (each timed, with its peak memory, in ``last_report``):
1. gradients — per-sample gradients g_n (n = 1…N), streamed in chunks; G_bᵀG_b accumulated
   per block (bmm over all blocks).
2. inverse — F_b⁻¹ = (λI + G_bᵀG_b / N)⁻¹ by batched Cholesky (equal to the paper's
   sequential Woodbury recursion, :func:`blocks.woodbury_sequential`).
3. scores — ρ_q = w_q² / (2 [F⁻¹]_qq); the lowest go, jointly or per layer.
4. update — δw = −F⁻¹ Σ_{q removed} (w_q / [F⁻¹]_qq) e_q per block (the simultaneous
   multi-weight approximation of WoodFisher's implementation), scaled by ``update_scale``;
   removed weights are then set to exactly 0.

Stages 1–2 do not depend on the sparsity: ``analyze`` returns them and a sweep computes them
once. With ``steps`` = k > 1 the target is reached in k pruning steps (the paper's one-shot
setting with several pruning iterations), stages 1–4 at every step, the Fisher recomputed at
the weights the previous step's update left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from weightlab import pruning
from weightlab.errors import DataError, UsageError
from weightlab.params import param

from weightlab_woodfisher.base import ScorePruner, SelectParams, split_flat
from weightlab_woodfisher.blocks import BlockLayout, accumulate_gram, invert_blocks
from weightlab_woodfisher.gradients import activation_bytes, per_sample_grads, require_data
from weightlab_woodfisher.meter import StageMeter, budget_bytes, gib

STEP_SCHEDULES = ("linear", "cubic", "geometric")


@dataclass
class WoodFisherParams(SelectParams):
    samples: int = param(1000, "N: per-sample gradients in the empirical Fisher", min=1)
    damping: float = param(1e-5, "λ: dampening added to the Fisher diagonal", min=0.0,
                           min_exclusive=True)
    block_size: int = param(128, "B: entries per diagonal block of the Fisher", min=1)
    span_layers: bool = param(False, "blocks run across layer boundaries (block_size ≥ P "
                                     "gives the full Fisher)")
    selection: str = param("joint", "remove the lowest scores over all blocks, or per layer",
                           choices=pruning.SELECTIONS)
    update_scale: float = param(1.0, "scale of the OBS update of surviving weights (1 = OBS, "
                                     "0 = none)", min=0.0)
    precision: str = param("float32", "dtype of the Fisher blocks (float64 models always use "
                                      "float64)", choices=("float32", "float64"))
    memory_budget_gb: float | None = param(None, "memory the computation may plan with (default: "
                                                 "90% of free CUDA memory, 4 GiB on CPU)",
                                           min=0.0, min_exclusive=True)
    grad_chunk: int = param(0, "samples per per-sample-gradient chunk (0: choose from the "
                               "budget)", min=0)
    steps: int = param(1, "k: pruning steps to the target, the Fisher recomputed at the "
                          "updated weights before each (k > 1: a sweep cannot reuse it)", min=1)
    # default geometric: IMP's per-phase rate (SPEC §11) and the best of the three at 98% here
    step_schedule: str = param("geometric", "sparsity after step i of k: linear s·i/k, cubic "
                                         "s·(1 − (1 − i/k)³) (Zhu & Gupta 2017), or geometric "
                                         "1 − (1 − s)^(i/k) (same fraction of the survivors "
                                         "each step)", choices=STEP_SCHEDULES)


def plan(num_params: int, layout: BlockLayout, samples: int, elt: int, act_bytes: int,
         budget: int, budget_from: str, requested_chunk: int = 0) -> dict[str, Any]:
    """Memory plan: the blocks (num_blocks·B²·elt) stay resident; gradients are streamed in
    chunks of c samples, each costing ~3·P·elt (vmap output, concatenation, padded copy) plus
    3× the activations; the inverse works on groups of blocks (Cholesky factor + inverse).
    Refuses, naming what would fit, when the blocks alone leave too little room."""
    bs = layout.block_size
    blocks = layout.num_blocks * bs * bs * elt
    vectors = 8 * layout.padded * elt  # w, diag, scores, masks, v, δw and their flat copies
    per_sample = 3 * num_params * elt + 3 * act_bytes
    room = budget - blocks - vectors
    if room < per_sample + 2 * bs * bs * elt:
        fit = max(1, int((budget - vectors - per_sample) / 2 / max(1, num_params) / elt))
        hint = (f"block_size ≤ {fit} would fit" if fit < bs and budget > vectors + per_sample
                else "no block size fits; raise memory_budget_gb or prune fewer layers")
        raise UsageError(f"woodfisher: {layout.num_blocks} Fisher blocks of {bs}×{bs} need "
                         f"{gib(blocks)} (+{gib(per_sample)} per gradient sample) but the "
                         f"budget is {gib(budget)} ({budget_from}); {hint}")
    chunk = requested_chunk or max(1, min(samples, 256, int(0.6 * room // per_sample)))
    group = max(1, min(layout.num_blocks, int(0.3 * room // (2 * bs * bs * elt))))
    return {"params": num_params, "block_size": bs, "num_blocks": layout.num_blocks,
            "blocks_bytes": blocks, "grads_bytes_if_stored": samples * num_params * elt,
            "grad_chunk": chunk, "streamed": chunk < samples, "inverse_group": group,
            "budget_bytes": budget, "budget_from": budget_from}


def step_targets(start: float, target: float, steps: int, schedule: str = "linear"
                 ) -> list[float]:
    """Sparsity after each of k steps from the current s_0 to the target s (i = 1…k):

    - ``linear``: s_i = s_0 + (s − s_0)·i/k (on a dense model s·i/k);
    - ``cubic`` (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1):
      s_i = s + (s_0 − s)(1 − i/k)³ — large steps first, small ones near the target;
    - ``geometric``: the density shrinks by the same factor each step,
      1 − s_i = (1 − s_0)·((1 − s)/(1 − s_0))^{i/k} (IMP's constant per-phase rate) — every
      step removes the same fraction of the weights still there.

    The last is exactly s."""
    if schedule not in STEP_SCHEDULES:
        raise UsageError(f"step_schedule {schedule!r}: expected one of "
                         f"{', '.join(STEP_SCHEDULES)}")
    if start >= target:  # already as sparse: every step keeps the old zeros
        return [target] * steps
    frac = [i / steps for i in range(1, steps)]
    if schedule == "geometric":
        ratio = (1 - target) / (1 - start)
        return [1 - (1 - start) * ratio ** f for f in frac] + [target]
    if schedule == "cubic":
        frac = [1 - (1 - f) ** 3 for f in frac]
    return [start + (target - start) * f for f in frac] + [target]


def _total_stages(reports: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage over several steps: seconds summed, peak and added memory the maximum."""
    out: dict[str, dict[str, float]] = {}
    for rep in reports:
        for name, st in rep["stages"].items():
            acc = out.setdefault(name, {"seconds": 0.0, "peak_bytes": 0, "extra_bytes": 0})
            acc["seconds"] += st["seconds"]
            acc["peak_bytes"] = max(acc["peak_bytes"], st["peak_bytes"])
            acc["extra_bytes"] = max(acc["extra_bytes"], st["extra_bytes"])
    return out


class WoodFisherPruner(ScorePruner):
    """WoodFisher (Singh & Alistarh 2020): optimal-brain-surgeon pruning with the empirical
    Fisher F = λI + (1/N) Σ_n g_n g_nᵀ, block-diagonal, inverted blockwise. Score
    ρ_q = w_q² / (2[F⁻¹]_qq); the lowest are removed (``joint``: over all blocks; or
    ``per_layer``) and the survivors move by δw = −F⁻¹ Σ_{q removed} (w_q/[F⁻¹]_qq) e_q per block.
    Seed settings: N = 1000, λ = 1e-5. Needs calibration data (training images).

    ``analyze`` returns F⁻¹ (with the layout, N and the timings of its stages), so a sweep over
    sparsities computes it once; each ``prune(..., analysis=a)`` starts from the dense weights
    and leaves ``a`` unchanged. ``steps`` = k > 1 prunes in k steps (sparsity after step i from
    :func:`step_targets`), each recomputing the Fisher at the current, already updated weights
    and masks on the same calibration samples; ``analyze`` then returns None (the statistics
    depend on the sparsity path, nothing can be shared between targets).

    After ``prune``, ``last_report`` holds the memory plan and, per stage (gradients, inverse,
    scores, update), seconds and peak memory (with an analysis: scores and update, the analysis'
    stages under ``analysis_stages``; with steps: the totals, and each step's report under
    ``steps``).

    Example::

        wf = registry.create("pruners", "woodfisher", {"block_size": 128})
        masks = wf.prune(net, 0.9, masks={}, data=bundle.loader("calibration", num_samples=1000))
        print(wf.last_report["stages"])
    """

    name = "woodfisher"
    summary = "WoodFisher: OBS pruning + update with a block-diagonal empirical Fisher inverse"
    needs_data = True
    Params = WoodFisherParams
    last_report: dict[str, Any] | None = None
    keep_scores = False  # tests set this to inspect ρ (``last_scores``)

    def statistics(self, model, names, old, data=None):
        """Stages 1–2 at the current weights and masks: F⁻¹ per block and what the scores and
        the update need (layout, dtype, N used, memory plan, stage timings)."""
        require_data(self.name, data)
        p = self.params
        params = dict(model.named_parameters())
        dev = params[names[0]].device
        dtype = torch.float64 if (p.precision == "float64" or params[names[0]].dtype ==
                                  torch.float64) else torch.float32
        elt = torch.finfo(dtype).bits // 8
        sizes = [params[n].numel() for n in names]
        layout = BlockLayout.build(sizes, p.block_size, p.span_layers)
        budget, budget_from = budget_bytes(dev, p.memory_budget_gb)
        mem_plan = plan(sum(sizes), layout, p.samples, elt, activation_bytes(model, data),
                        budget, budget_from, p.grad_chunk)
        meter = StageMeter(dev)

        with meter.stage("gradients"):
            gram = torch.zeros(layout.num_blocks, layout.block_size, layout.block_size,
                               device=dev, dtype=dtype)
            n_used, buf = 0, None
            for parts in per_sample_grads(model, names, data, p.samples,
                                          mem_plan["grad_chunk"], old, dtype):
                c = parts[0].shape[0]
                if buf is None or buf.shape[0] < c:
                    buf = parts[0].new_zeros(c, layout.padded)  # reused: no new pages
                accumulate_gram(gram, layout.fill(parts, buf[:c]))
                n_used += c
                del parts
            del buf
        if n_used == 0:
            raise DataError("woodfisher: the calibration data yielded no samples")
        if not torch.isfinite(gram).all():
            raise DataError("woodfisher: non-finite per-sample gradients (diverged model?)")
        with meter.stage("inverse"):
            finv = invert_blocks(gram, n_used, p.damping, mem_plan["inverse_group"])
        return {"finv": finv, "layout": layout, "dtype": dtype, "samples": n_used,
                "plan": mem_plan, "stages": meter.stages}

    def analyze(self, model, masks, data=None):
        """F⁻¹ of ``model`` with ``masks`` for a sweep; None with steps > 1 (each step's Fisher
        is taken at the weights the previous step left, so it depends on the target)."""
        if self.params.steps > 1:
            return None
        return super().analyze(model, masks, data)

    def prune(self, model, sparsity, masks, data=None, analysis=None):
        if self.params.steps == 1:
            return super().prune(model, sparsity, masks, data, analysis)
        if analysis is not None:
            raise UsageError(f"woodfisher: steps={self.params.steps} recomputes the Fisher at "
                             f"every step; it cannot use an analysis (use steps=1)")
        require_data(self.name, data)
        pruning.target_zeros(sparsity, 1)
        p = self.params
        names, current = self.prepare(model, masks)
        total = sum(m.numel() for m in current.values())
        start = sum(int((~m).sum()) for m in current.values()) / total
        reports = []
        for target in step_targets(start, sparsity, p.steps, p.step_schedule):
            # gradients at the current (updated) weights with the current masks → F⁻¹ →
            # scores → OBS update
            stats = self.statistics(model, names, current, data)
            current = self.prune_with(model, target, names, current, stats)
            del stats
            report = self.last_report
            report["sparsity_target"] = target
            report["sparsity"] = sum(int((~m).sum()) for m in current.values()) / total
            reports.append(report)
        self.last_report = {"plan": reports[0]["plan"], "samples": reports[-1]["samples"],
                            "stages": _total_stages(reports), "steps": reports}
        return current

    def prune_with(self, model, sparsity, names, old, stats, analysis=None):
        """Stages 3–4 from ``stats`` (read only: the survivors' update is a new tensor)."""
        p = self.params
        params = dict(model.named_parameters())
        finv, layout, dtype = stats["finv"], stats["layout"], stats["dtype"]
        meter = StageMeter(finv.device)
        with meter.stage("scores"), torch.no_grad():
            w_flat = torch.cat([params[n].detach().flatten().to(dtype) for n in names])
            diag_flat = layout.to_flat(torch.diagonal(finv, dim1=-2, dim2=-1))
            rho = w_flat.square() / (2 * diag_flat)  # ρ_q = w_q² / (2[F⁻¹]_qq)
            new = pruning.masks_from_scores(split_flat(rho, names, params), sparsity, old,
                                            p.selection)
            if self.keep_scores:
                self.last_scores = split_flat(rho, names, params)
        with meter.stage("update"), torch.no_grad():
            keep = torch.cat([new[n].flatten() for n in names])
            if p.update_scale:
                # δw = −F⁻¹ v with v_q = w_q/[F⁻¹]_qq on removed q, 0 elsewhere (per block)
                v_blocks = layout.to_blocks(torch.where(keep, 0.0, w_flat / diag_flat))
                delta = layout.to_flat(torch.bmm(finv, v_blocks.unsqueeze(-1)).squeeze(-1))
                w_flat = w_flat - p.update_scale * delta
            w_flat = torch.where(keep, w_flat, 0.0)  # removed weights end exactly 0
            for n, w in split_flat(w_flat, names, params).items():
                params[n].copy_(w.to(params[n].dtype))
        report: dict[str, Any] = {"plan": stats["plan"], "samples": stats["samples"]}
        if analysis is None:
            report["stages"] = {**stats["stages"], **meter.stages}
        else:  # stages 1–2 ran once, in analyze
            report["stages"] = meter.stages
            report["analysis_stages"] = stats["stages"]
        self.last_report = report
        return new
