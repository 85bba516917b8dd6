"""Memory plan of the block-diagonal Fisher: resident, or streamed in groups of blocks.

Resident (one group): all num_blocks·B²·elt bytes of blocks live at once; one gradient pass.
Streamed (G groups, chosen when the blocks do not fit the budget, or forced with ``groups``):
the blocks are cut into G contiguous groups of whole blocks; a group's Fisher is built from
the per-sample gradients of only the parameters its blocks touch, inverted, and freed after
keeping diag(F⁻¹) — G gradient passes for the scores, and G more for the OBS update, which
needs each group's F⁻¹ again (how the WoodFisher paper prunes ResNet-50 with B = 2000:
25.5M·2000·4 B ≈ 204 GB of blocks, more than an 80 GB GPU or its 128 GB host).

Bytes of group g, with m_g blocks whose entries come from T_g parameter entries (elt each):

- blocks     m_g·B²·elt
- gradients  c_g·(3·T_g·elt + 3·act): a chunk of c_g samples (vmap output, the group's slices,
             the padded copy; activations kept for backward)
- inverse    k_g·3·B²·elt: Cholesky factor, L⁻¹ and the recursion's temporaries of k_g
             blocks at a time (measured: 3.0 B²·elt per block on ResNet-20, B = 512)

plus 8·P_padded·elt for the flat vectors that span every group (w, diag F⁻¹, ρ, masks, v, δw).
A group must fit with c_g = 1 and k_g = 1; the plan refuses only when not even a one-block
group does, naming the block size that would fit.
"""

from __future__ import annotations

import bisect
import math
from itertools import accumulate
from typing import Any

from weightlab.errors import UsageError

from weightlab_woodfisher.blocks import BlockLayout
from weightlab_woodfisher.meter import human_bytes

# A streamed group leaves room for at least SOFT_CHUNK samples per gradient chunk and its blocks
# take at most GROUP_SHARE of the budget: fewer groups (passes) against vmap chunks so small
# that the per-sample gradients crawl. A group of one block only needs to fit with c = 1.
SOFT_CHUNK = 8
GROUP_SHARE = 0.75


class _Touched:
    """T(first, stop): how many parameter entries blocks [first, stop) draw from (whole
    parameters: vmap(grad) differentiates a parameter as a whole). O(log L) per query."""

    def __init__(self, layout: BlockLayout, num_params: int):
        self.layout, self.num_params = layout, num_params
        self.starts = layout.offsets
        self.ends = [o + n for o, n in zip(layout.offsets, layout.sizes, strict=False)]
        self.prefix = [0, *accumulate(layout.sizes)]

    def __call__(self, first: int, stop: int) -> int:
        if first == 0 and stop >= self.layout.num_blocks:
            return self.num_params
        bs = self.layout.block_size
        i = bisect.bisect_right(self.ends, first * bs)  # first parameter ending after the start
        j = bisect.bisect_left(self.starts, stop * bs)  # parameters starting before the end
        return self.prefix[j] - self.prefix[i]


def plan(num_params: int, layout: BlockLayout, samples: int, elt: int, act_bytes: int,
         budget: int, budget_from: str, requested_chunk: int = 0, groups: int = 0,
         update: bool = True) -> dict[str, Any]:
    """Groups of blocks, gradient chunk and inverse workspace per group, and the planned peak
    bytes per stage. ``groups``: 0 = resident when it fits, else as few streamed groups as fit;
    k = k groups of equal block count (1 = resident). ``update``: whether the OBS update runs
    (streamed: its second pass over the groups)."""
    bs, nb = layout.block_size, layout.num_blocks
    unit = bs * bs * elt
    vectors = 8 * layout.padded * elt
    avail = budget - vectors
    touched = _Touched(layout, num_params)

    def per_sample(first: int, stop: int) -> int:
        return 3 * touched(first, stop) * elt + 3 * act_bytes

    def need(first: int, stop: int, chunk: int) -> int:
        return (stop - first) * unit + 3 * unit + chunk * per_sample(first, stop)

    def soft(first: int, stop: int) -> bool:
        return ((stop - first) * unit <= GROUP_SHARE * avail
                and need(first, stop, min(samples, SOFT_CHUNK)) <= avail)

    if groups == 1 or nb <= 1 or (groups == 0 and need(0, nb, 1) <= avail):
        if need(0, nb, 1) > avail:
            _refuse_resident(num_params, layout, elt, per_sample(0, nb), budget, budget_from,
                             vectors)
        bounds = [0, nb]
    elif groups > 1:
        k = min(groups, nb)
        bounds = [round(i * nb / k) for i in range(k + 1)]
        worst = max(range(k), key=lambda i: need(bounds[i], bounds[i + 1], 1))
        if need(bounds[worst], bounds[worst + 1], 1) > avail:
            a, b = bounds[worst], bounds[worst + 1]
            raise UsageError(f"woodfisher: groups={groups}: a group of {b - a} Fisher blocks "
                             f"of {bs}×{bs} needs {human_bytes(need(a, b, 1) + vectors)} but "
                             f"the budget is {human_bytes(budget)} ({budget_from}); use more "
                             f"groups or groups=0 (automatic)")
    else:
        bounds = _pack(nb, lambda a, b: need(a, b, 1) <= avail, soft)
        if bounds is None:
            _refuse_block(num_params, layout, elt, act_bytes, budget, budget_from,
                          vectors + max(need(b, b + 1, 1) for b in range(nb)))

    chunks, workspace, grad_peak, inv_peak = [], [], 0, 0
    for first, stop in zip(bounds, bounds[1:], strict=False):
        room = avail - (stop - first) * unit
        ps = per_sample(first, stop)
        chunk = requested_chunk or max(1, min(samples, 256, int(0.6 * room // ps)))
        inv = max(1, min(stop - first, int(0.3 * room // (3 * unit))))
        chunks.append(chunk)
        workspace.append(inv)
        grad_peak = max(grad_peak, vectors + (stop - first) * unit + chunk * ps)
        inv_peak = max(inv_peak, vectors + (stop - first) * unit + inv * 3 * unit)
    g = len(bounds) - 1
    streamed = g > 1
    blocks = nb * unit
    peak = {"gradients": grad_peak, "inverse": inv_peak, "scores": vectors,
            "update": (max(grad_peak, inv_peak) if streamed and update
                       else vectors + (blocks if not streamed else 0))}
    return {"params": num_params, "block_size": bs, "num_blocks": nb,
            "blocks_bytes": blocks, "grads_bytes_if_stored": samples * num_params * elt,
            "grad_chunk": min(chunks), "grads_chunked": min(chunks) < samples,
            "inverse_group": min(workspace),
            "mode": "streamed" if streamed else "resident", "streamed": streamed, "groups": g,
            "passes": g * (2 if update else 1) if streamed else 1,
            "group_bounds": bounds, "group_chunks": chunks, "group_inverse": workspace,
            "group_bytes": max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) * unit,
            "peak_bytes": peak, "planned_peak_bytes": max(peak.values()),
            "budget_bytes": budget, "budget_from": budget_from}


def _pack(nb: int, fits, soft) -> list[int] | None:
    """Contiguous groups of blocks: each as long as ``soft`` allows (at least one block, which
    must ``fit``), then, with that many groups, equal block counts if they are all ``soft``
    (even chunk sizes) — else the greedy cut. None when a single block does not fit."""
    bounds = [0]
    while bounds[-1] < nb:
        first = bounds[-1]
        if not fits(first, first + 1):
            return None
        stop = first + 1
        while stop < nb and soft(first, stop + 1):
            stop += 1
        bounds.append(stop)
    g = len(bounds) - 1
    even = [round(i * nb / g) for i in range(g + 1)]
    if all(soft(a, b) or (b - a == 1 and fits(a, b)) for a, b in zip(even, even[1:],
                                                                      strict=False)):
        return even
    return bounds


def _refuse_resident(num_params, layout, elt, per_sample, budget, budget_from, vectors):
    bs = layout.block_size
    blocks = layout.num_blocks * bs * bs * elt
    fit = max(1, int((budget - vectors - per_sample) / 2 / max(1, num_params) / elt))
    hint = (f"block_size ≤ {fit} would fit" if fit < bs and budget > vectors + per_sample
            else "no block size fits; raise memory_budget_gb or prune fewer layers")
    stream = ", or groups=0 streams them" if layout.num_blocks > 1 else ""
    raise UsageError(f"woodfisher: {layout.num_blocks} Fisher blocks of {bs}×{bs} need "
                     f"{human_bytes(blocks)} (+{human_bytes(per_sample)} per gradient sample) "
                     f"but the budget is {human_bytes(budget)} ({budget_from}); {hint}{stream}")


def _refuse_block(num_params, layout, elt, act_bytes, budget, budget_from, need):
    bs = layout.block_size
    fit = fitting_block_size(num_params, layout, elt, act_bytes, budget)
    hint = (f"block_size ≤ {fit} would fit" if 0 < fit < bs
            else "no block size fits; raise memory_budget_gb or prune fewer layers")
    raise UsageError(f"woodfisher: not even one Fisher block of {bs}×{bs} fits: with its "
                     f"inverse workspace and one sample's gradient it needs {human_bytes(need)} "
                     f"but the budget is {human_bytes(budget)} ({budget_from}); {hint}")


def fitting_block_size(num_params: int, layout: BlockLayout, elt: int, act_bytes: int,
                       budget: int) -> int:
    """The largest B whose one-block group surely fits (0: none), from an upper bound on the
    entries one block draws from: its largest parameter (a block within one layer) or, with
    blocks across layers, B plus the two parameters it may cut."""
    span = layout.span_layers
    largest, n_layers = max(layout.sizes), len(layout.sizes)

    def need(b: int) -> int:
        padded = num_params + (0 if span else n_layers * b)
        drawn = 2 * largest + b if span else largest
        return 4 * b * b * elt + 8 * padded * elt + 3 * drawn * elt + 3 * act_bytes

    b = int(math.sqrt(max(0, budget - need(0)) / (4 * elt)))
    while b > 0 and need(b) > budget:
        b = int(b * 0.95) if b > 20 else b - 1
    return b
