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

Streamed mode (:mod:`.plan`; chosen when the blocks do not fit the memory budget, or forced
with ``groups``): the blocks are processed in G contiguous groups. Pass 1 runs stages 1–2 per
group, from the per-sample gradients of only that group's parameters, and keeps diag(F⁻¹);
stage 3 scores all weights at once; pass 2 recomputes each group's F⁻¹ (a second gradient
pass at the same, unchanged weights) for stage 4, whose δw goes to a separate flat buffer
written to the model at the end. 2G gradient passes (G with ``update_scale`` = 0).

Stages 1–2 do not depend on the sparsity: ``analyze`` returns them and a sweep computes them
once (streamed: diag(F⁻¹) only; every ``prune`` then runs pass 2). With ``steps`` = k > 1 the
target is reached in k pruning steps (the paper's one-shot setting with several pruning
iterations), stages 1–4 at every step, the Fisher recomputed at the weights the previous
step's update left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightlab.errors import DataError, UsageError
from weightlab.params import param
from weightlab.pruners import SELECTIONS, ScorePruner, SelectParams, split_flat

if TYPE_CHECKING:  # torch and the numerics load in the methods: listing stays cheap
    import torch
    from torch import nn

    from weightlab_woodfisher.blocks import BlockGroup, BlockLayout
    from weightlab_woodfisher.meter import StageMeter

__all__ = ["WoodFisherParams", "WoodFisherPruner", "step_targets"]

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
                           choices=SELECTIONS)
    update_scale: float = param(1.0, "scale of the OBS update of surviving weights (1 = OBS, "
                                     "0 = none)", min=0.0)
    precision: str = param("auto", "dtype of the Fisher blocks: auto = float64 when samples < "
                                   "block_size (then float32 rounding of the rank-deficient "
                                   "blocks can exceed the damping), else float32; float64 "
                                   "models always use float64",
                           choices=("auto", "float32", "float64"))
    memory_budget_gb: float | None = param(None, "memory the computation may plan with (default: "
                                                 "90% of free CUDA memory, 4 GiB on CPU)",
                                           min=0.0, min_exclusive=True)
    grad_chunk: int = param(0, "samples per per-sample-gradient chunk (0: choose from the "
                               "budget)", min=0)
    groups: int = param(0, "Fisher blocks in memory at once: 0 = all when they fit the budget, "
                           "else streamed in as few groups as fit; k = k groups (1 = all). "
                           "Streamed costs 2 gradient passes per group", min=0)
    steps: int = param(1, "k: pruning steps to the target, the Fisher recomputed at the "
                          "updated weights before each (k > 1: a sweep cannot reuse it)", min=1)
    # default geometric: IMP's per-phase rate 1 − (1 − goal)^(1/n) (Zimmer et al. 2024, SMS)
    # and the best of the three at 98% here
    step_schedule: str = param("geometric", "sparsity after step i of k: linear s·i/k, cubic "
                                         "s·(1 − (1 − i/k)³) (Zhu & Gupta 2017), or geometric "
                                         "1 − (1 − s)^(i/k) (same fraction of the survivors "
                                         "each step)", choices=STEP_SCHEDULES)


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

    When the blocks do not fit the memory budget (or with ``groups`` = k > 1) the Fisher is
    streamed: G groups of blocks, each built and inverted alone, twice (pass 1 for diag(F⁻¹)
    and the scores, pass 2 for the OBS update) — the same masks and weights as the resident
    computation for 2G gradient passes instead of one. A streamed ``analyze`` holds diag(F⁻¹)
    only; each ``prune(..., analysis=a)`` then runs pass 2 (G passes) over ``data``, which must
    yield the same samples (checked). ``plan_for(model, data)`` shows the plan beforehand.

    After ``prune``, ``last_report`` holds the memory plan (mode, groups, passes, planned peak
    bytes per stage), the gradient passes run and, per stage (gradients, inverse, scores,
    update; streamed also pass2_gradients, pass2_inverse), seconds and peak memory (with an
    analysis: the stages of this call, the analysis' under ``analysis_stages``; with steps: the
    totals, and each step's report under ``steps``).

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
    progress: Callable[[str], None] | None = None  # told each streamed group as it starts

    def statistics(self, model, names, old, data=None):
        """Stages 1–2 at the current weights and masks: F⁻¹ per block (streamed: its diagonal
        only) and what the scores and the update need (layout, dtype, N used, memory plan,
        stage timings, a fingerprint of the samples)."""
        import torch

        from weightlab_woodfisher.gradients import require_data
        from weightlab_woodfisher.meter import StageMeter

        require_data(self.name, data)
        layout, dtype, mem_plan = self._plan(model, names, data)
        dev = next(model.parameters()).device
        meter = StageMeter(dev)
        stats = {"layout": layout, "dtype": dtype, "plan": mem_plan, "stages": meter.stages}
        if not mem_plan["streamed"]:
            finv, stats["samples"], stats["fingerprint"] = self._group_inverse(
                model, names, layout.group(0, layout.num_blocks), data, old, dtype,
                mem_plan, 0, meter)
            return {**stats, "finv": finv, "diag": torch.diagonal(finv, dim1=-2, dim2=-1)}
        # streamed pass 1: per group F⁻¹ → keep diag(F⁻¹) (B floats per block), free the group
        diag = torch.empty(layout.num_blocks, layout.block_size, device=dev, dtype=dtype)
        groups = self._groups(layout, mem_plan)
        for g, group in enumerate(groups):
            self._progress(f"pass 1 (diag F⁻¹): group {g + 1}/{len(groups)}")
            finv, n_used, fp = self._group_inverse(model, names, group, data, old, dtype,
                                                   mem_plan, g, meter, stats)
            stats["samples"], stats["fingerprint"] = n_used, fp
            diag[group.first:group.stop] = torch.diagonal(finv, dim1=-2, dim2=-1)
            del finv
        return {**stats, "diag": diag}

    def plan_for(self, model: nn.Module, data) -> dict[str, Any]:
        """The memory plan ``prune`` would follow on ``model`` — resident or streamed, groups,
        gradient passes, planned peak bytes per stage — without computing anything."""
        from weightlab_woodfisher.gradients import require_data

        require_data(self.name, data)
        return self._plan(model, self.chosen(model), data)[2]

    def _plan(self, model, names, data) -> tuple[BlockLayout, torch.dtype, dict[str, Any]]:
        import torch

        from weightlab_woodfisher.blocks import BlockLayout
        from weightlab_woodfisher.gradients import activation_bytes
        from weightlab_woodfisher.meter import budget_bytes
        from weightlab_woodfisher.plan import plan

        p = self.params
        params = dict(model.named_parameters())
        # N < B: F_b = λI + G_bᵀG_b/N has rank ≤ N, its null space is held up by λ alone, and
        # float32 rounding of G_bᵀG_b (~1e-7 of its largest entries) can exceed λ = 1e-5:
        # measured up to 214% error in diag(F⁻¹) at B = 256, N = 8 (float64: 2e-7)
        wide = p.precision == "auto" and p.samples < min(p.block_size, sum(
            params[n].numel() for n in names))
        dtype = torch.float64 if (p.precision == "float64" or wide or params[names[0]].dtype ==
                                  torch.float64) else torch.float32
        elt = torch.finfo(dtype).bits // 8
        sizes = [params[n].numel() for n in names]
        layout = BlockLayout.build(sizes, p.block_size, p.span_layers)
        budget, budget_from = budget_bytes(params[names[0]].device, p.memory_budget_gb)
        return layout, dtype, plan(sum(sizes), layout, p.samples, elt,
                                   activation_bytes(model, data), budget, budget_from,
                                   p.grad_chunk, p.groups, p.update_scale > 0)

    def _progress(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    @staticmethod
    def _groups(layout: BlockLayout, mem_plan: dict[str, Any]) -> list[BlockGroup]:
        bounds = mem_plan["group_bounds"]
        return [layout.group(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]

    def _group_inverse(self, model, names, group: BlockGroup, data, old, dtype, mem_plan,
                       g: int, meter: StageMeter, same_as: dict[str, Any] | None = None,
                       tag: str = "") -> tuple[torch.Tensor, int, torch.Tensor]:
        """Stages 1–2 for one group of blocks: G_bᵀG_b from the per-sample gradients of the
        parameters its blocks touch, then F_b⁻¹. ``same_as``: statistics of an earlier pass
        whose samples (count and fingerprint) this pass must see again."""
        import torch

        from weightlab_woodfisher.blocks import accumulate_gram, invert_blocks
        from weightlab_woodfisher.gradients import per_sample_grads

        p = self.params
        bs = group.block_size
        dev = next(model.parameters()).device
        fp = torch.zeros(3, device=dev, dtype=torch.float64)
        with meter.stage(f"{tag}gradients"):
            gram = torch.zeros(group.num_blocks, bs, bs, device=dev, dtype=dtype)
            n_used, buf = 0, None
            for parts in per_sample_grads(model, [names[i] for i in group.params], data,
                                          p.samples, mem_plan["group_chunks"][g], old, dtype,
                                          fp):
                c = parts[0].shape[0]
                if buf is None or buf.shape[0] < c:
                    buf = parts[0].new_zeros(c, group.num_blocks * bs)  # reused: no new pages
                accumulate_gram(gram, group.fill(parts, buf[:c]))
                n_used += c
                del parts
            del buf
        if n_used == 0:
            raise DataError("woodfisher: the calibration data yielded no samples")
        fp = fp.cpu()
        if same_as is not None and "samples" in same_as and (
                n_used != same_as["samples"] or not torch.equal(fp, same_as["fingerprint"])):
            raise DataError(f"woodfisher: streamed mode passes over the calibration data once "
                            f"per group of blocks and needs the same samples every time; this "
                            f"pass saw {n_used} samples (first pass: {same_as['samples']}) "
                            f"with different values (shuffled or augmented loader?)")
        # a non-finite gradient entry g_i shows on the diagonal (Σ g_i²), and finite diagonals
        # bound every off-diagonal entry (Cauchy–Schwarz): B numbers per block to check, not
        # B² (torch.isfinite of all blocks costs 0.9× their memory and 0.5 s per 267 MB)
        if not torch.isfinite(torch.diagonal(gram, dim1=-2, dim2=-1)).all():
            raise DataError("woodfisher: non-finite per-sample gradients (diverged model?)")
        with meter.stage(f"{tag}inverse"):
            finv = invert_blocks(gram, n_used, p.damping, mem_plan["group_inverse"][g])
        return finv, n_used, fp

    def analyze(self, model, masks, data=None):
        """F⁻¹ of ``model`` with ``masks`` for a sweep; None with steps > 1 (each step's Fisher
        is taken at the weights the previous step left, so it depends on the target)."""
        if self.params.steps > 1:
            return None
        return super().analyze(model, masks, data)

    def prune(self, model, sparsity, masks, data=None, analysis=None):
        from weightlab import pruning

        from weightlab_woodfisher.gradients import require_data

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
            current = self.prune_with(model, target, names, current, stats, data=data)
            del stats
            report = self.last_report
            report["sparsity_target"] = target
            report["sparsity"] = sum(int((~m).sum()) for m in current.values()) / total
            reports.append(report)
        self.last_report = {"plan": reports[0]["plan"], "samples": reports[-1]["samples"],
                            "stages": _total_stages(reports), "steps": reports,
                            "gradient_passes": sum(r["gradient_passes"] for r in reports)}
        return current

    def prune_with(self, model, sparsity, names, old, stats, analysis=None, data=None):
        """Stages 3–4 from ``stats`` (read only: the survivors' update is a new tensor).
        Streamed: pass 2 recomputes each group's F⁻¹ from ``data`` at the weights of pass 1 —
        the model is written only after the last group."""
        import torch
        from weightlab import pruning

        from weightlab_woodfisher.meter import StageMeter

        p = self.params
        params = dict(model.named_parameters())
        layout, dtype, mem_plan = stats["layout"], stats["dtype"], stats["plan"]
        meter = StageMeter(stats["diag"].device)
        with meter.stage("scores"), torch.no_grad():
            w_flat = torch.cat([params[n].detach().flatten().to(dtype) for n in names])
            diag_flat = layout.to_flat(stats["diag"])
            rho = w_flat.square() / (2 * diag_flat)  # ρ_q = w_q² / (2[F⁻¹]_qq)
            new = pruning.masks_from_scores(split_flat(rho, names, params), sparsity, old,
                                            p.selection)
            if self.keep_scores:
                self.last_scores = split_flat(rho, names, params)
        passes = 0
        with torch.no_grad():
            keep = torch.cat([new[n].flatten() for n in names])
            if p.update_scale:
                # δw = −F⁻¹ v with v_q = w_q/[F⁻¹]_qq on removed q, 0 elsewhere (per block)
                with meter.stage("update"):
                    v_blocks = layout.to_blocks(torch.where(keep, 0.0, w_flat / diag_flat))
                if "finv" in stats:
                    with meter.stage("update"):
                        delta_blocks = torch.bmm(stats["finv"], v_blocks.unsqueeze(-1)
                                                 ).squeeze(-1)
                else:
                    delta_blocks = torch.empty_like(v_blocks)
                    passes = self._streamed_update(model, names, layout, data, old, dtype,
                                                   stats, v_blocks, delta_blocks, meter)
                with meter.stage("update"):
                    w_flat = w_flat - p.update_scale * layout.to_flat(delta_blocks)
            with meter.stage("update"):
                w_flat = torch.where(keep, w_flat, 0.0)  # removed weights end exactly 0
                for n, w in split_flat(w_flat, names, params).items():
                    params[n].copy_(w.to(params[n].dtype))
        report: dict[str, Any] = {"plan": mem_plan, "samples": stats["samples"]}
        if analysis is None:
            report["stages"] = {**stats["stages"], **meter.stages}
            report["gradient_passes"] = (mem_plan["groups"] if mem_plan["streamed"] else 1) \
                + passes
        else:  # stages 1–2 ran once, in analyze
            report["stages"] = meter.stages
            report["analysis_stages"] = stats["stages"]
            report["gradient_passes"] = passes
        self.last_report = report
        return new

    def _streamed_update(self, model, names, layout, data, old, dtype, stats, v_blocks,
                         delta_blocks, meter) -> int:
        """Pass 2: each group's F⁻¹ again (same weights, masks and samples as pass 1), then
        δw_b = F_b⁻¹ v_b for its blocks into ``delta_blocks``. Returns the passes run.

        Recomputed rather than kept: streaming is chosen because the blocks do not fit the
        budget, and on a CPU that budget is the host memory itself; on a GPU the case it exists
        for (ResNet-50, B = 2000: 204 GB of blocks) does not fit the 128 GB host either."""
        import torch

        from weightlab_woodfisher.gradients import require_data

        require_data(self.name, data)
        mem_plan = stats["plan"]
        groups = self._groups(layout, mem_plan)
        with torch.enable_grad():
            for g, group in enumerate(groups):
                self._progress(f"pass 2 (OBS update): group {g + 1}/{len(groups)}")
                finv, _, _ = self._group_inverse(model, names, group, data, old, dtype,
                                                 mem_plan, g, meter, stats, tag="pass2_")
                with meter.stage("update"), torch.no_grad():
                    delta_blocks[group.first:group.stop] = torch.bmm(
                        finv, v_blocks[group.first:group.stop].unsqueeze(-1)).squeeze(-1)
                del finv
        return len(groups)
