"""Does weightlab understand a model? Its channel spaces, and a permutation-invariance check.

Applying a random permutation to every free channel space (each tensor's axes in that space
reordered consistently) must leave the model's function unchanged; any channel tie the traced
graph misses shows up as a difference in the outputs. This is the first thing to run on one's
own architecture before merging or pruning it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from weightlab.graph.spaces import FeatureGraph


def describe(graph: FeatureGraph) -> list[dict[str, Any]]:
    """One row per channel space: size, free or fixed (and why), attention heads and the tied
    space sharing their permutation, the layers producing it, the norms acting on it, how many
    tensor axes carry it, where its features are read."""
    return [{"id": s.id, "size": s.size, "free": not s.fixed, "reason": s.reason,
             "heads": s.groups, "tie": s.tie,
             "producers": list(s.producers), "norms": list(s.norms),
             "entries": len(s.entries), "feature_points": list(s.feature_points)}
            for s in graph.spaces.values()]


@torch.no_grad()
def permutation_check(model: nn.Module, graph: FeatureGraph, example: torch.Tensor, *,
                      seed: int = 0, tolerance: float = 1e-4) -> dict[str, Any]:
    """Outputs of ``model`` and of a copy with a seeded random permutation of every free
    space, on ``example`` (eval mode, float64): max |Δ|, max |output| and their ratio;
    ``invariant`` when the ratio is at most ``tolerance``.

    Constant tensors (a zero-initialized classifier head, unit norm weights, zero biases,
    layer scales) would hide a missed tie, or make the output zero (torchvision's ViT head):
    in the checked copy they get seeded random values first (``randomized`` counts them)."""
    from weightlab.alignment import permute_model, random_permutation

    net = _float64(model).eval()
    gen = torch.Generator().manual_seed(seed)
    randomized = _randomize_constants(net, gen)
    perm = random_permutation(graph, gen)
    other = permute_model(net, graph, perm).eval()
    x = example.to(torch.float64) if example.is_floating_point() else example
    y, z = net(x), other(x)
    diff = float((y - z).abs().max())
    scale = float(y.abs().max())
    rel = diff / max(scale, 1e-30)
    return {"max_abs_diff": diff, "max_abs_output": scale, "relative": rel,
            "tolerance": tolerance, "invariant": rel <= tolerance, "seed": seed,
            "permuted_spaces": len(perm.perms), "randomized": randomized}


def _randomize_constants(net: nn.Module, gen: torch.Generator) -> int:
    """Give every constant floating tensor of more than one element seeded random values
    around its constant (running variances stay positive)."""
    state = net.state_dict()
    count = 0
    for key, v in state.items():
        if not v.is_floating_point() or v.numel() < 2 or not bool((v == v.flatten()[0]).all()):
            continue
        noise = torch.rand(v.shape, generator=gen, dtype=v.dtype)
        v.copy_(0.5 + noise if key.endswith("running_var") else v + 0.4 * (noise - 0.5))
        count += 1
    return count


def _float64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(torch.float64)
