"""Preserve-first merging (PFM) sweeps: accuracy of the partially merged model for each k,
with its cost, next to the two base models and their logit ensemble (Qu & Horváth 2024,
"Vanishing Feature", §PFM).

One alignment (one calibration pass for data-driven matchers) serves every k. For each k the
partially merged model is optionally corrected by a normalizer; REPAIR-style normalizers get
as references the same structure computing model A and model B (each expressed in the merged
space, weights (1, 0) and (0, 1)), so the preserved copies are left as they are and the merged
remainder is pulled to the interpolated statistics. Cost is counted with weightlab.flopcount at
the model's real input size: the preserved layers count twice; the merge points (a channel
average, no weights) are not conv/linear layers and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from weightlab.alignment import Alignment
from weightlab.flopcount import count
from weightlab.graph.spaces import FeatureGraph
from weightlab.metrics import evaluate

from weightlab_zipit.joint import joint_form
from weightlab_zipit.partial import PartialModel, build_partial

HALF = (0.5, 0.5)


def partial_with_normalizer(models: Sequence[nn.Module], graph: FeatureGraph,
                            alignment: Alignment | None, k: int, input_shape: Sequence[int],
                            normalizer: Any = None, calibration: Any = None) -> nn.Module:
    """The partially merged model for ``k``, corrected by ``normalizer`` if given."""
    net = build_partial(models, graph, alignment, k, input_shape, HALF)
    if normalizer is None:
        return net.eval()
    refs = [build_partial(models, graph, alignment, k, input_shape, w).eval()
            for w in ((1.0, 0.0), (0.0, 1.0))]
    # ``graph`` describes the base architecture, not the partial model: not passed
    fixed = normalizer.apply(net, refs, list(HALF), calibration, None)
    return fixed.eval()


def cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    c = count(model, input_shape)
    return {"params": c["params"], "macs": c["macs"], "flops": c["flops"]}


def sweep(models: Sequence[nn.Module], graph: FeatureGraph, alignment: Alignment | None,
          input_shape: Sequence[int], test: Any, ks: Sequence[int], *, normalizer: Any = None,
          calibration: Any = None,
          on_step: Callable[[int, nn.Module], None] | None = None, references: bool = True
          ) -> dict[str, Any]:
    """Rows for each k in ``ks`` (loss, top-1, params, FLOPs, extra over one model) and the
    references: both base models and their logit ensemble (k = L, no normalizer; an empty
    list unless ``references``). ``on_step(k, model)`` sees each evaluated partially merged
    model."""
    joint = joint_form(alignment, graph)
    n_layers = len(graph.layers)
    base = cost(models[0], input_shape)
    nets = [] if not references else [
        ("model A", models[0]), ("model B", models[1]),
        ("ensemble", build_partial(models, graph, joint, n_layers, input_shape))]
    ref_rows = [{"model": label, **_metrics(net, test), **cost(net, input_shape)}
                for label, net in nets]
    rows = []
    for k in ks:
        net = partial_with_normalizer(models, graph, joint, k, input_shape, normalizer,
                                      calibration)
        c = cost(net, input_shape)
        rows.append({"k": k, "preserved": graph.layers[k - 1].name if k else None,
                     **_metrics(net, test), **c,
                     "extra_params": c["params"] - base["params"],
                     "extra_flops": c["flops"] - base["flops"],
                     "params_ratio": c["params"] / base["params"],
                     "flops_ratio": c["flops"] / base["flops"]})
        if on_step is not None:
            on_step(k, net)
    return {"layers": n_layers, "layer_names": [layer.name for layer in graph.layers],
            "base_cost": base, "references": ref_rows, "rows": rows}


def _metrics(net: nn.Module, loader: Any) -> dict[str, float]:
    m = evaluate(net, loader)
    return {"loss": m["loss"], "top1": m["top1"], "top5": m["top5"]}


def describe(net: PartialModel) -> str:
    k, n = net.partial["k"], net.partial["layers"]
    return "fully merged" if k == 0 else "ensemble" if k == n else \
        f"first {k} of {n} layers preserved"
