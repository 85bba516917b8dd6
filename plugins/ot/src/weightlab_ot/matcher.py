"""The ot plugin's matcher. Torch and POT are imported inside ``match`` so that listing
components stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.params import param


class OTFusion(Matcher):
    """OT fusion (Singh & Jaggi, NeurIPS 2020): per free channel space, in topological order,
    the transport plan T between A's and B's channels under the cost C_ij = ‖a_i − b_j‖² with
    uniform marginals (1/n); B is aligned with M = n·T on the producer side (each of A's
    channels receives a T-weighted average of B's) and U = Mᵀ on the consumer side.
    ``basis=weights`` (no data): a channel's support is its producer-side weight rows, with
    B's input axes already aligned by the earlier spaces' maps (the paper's layer-by-layer
    procedure); ``basis=activations``: its features on calibration data. ``reg=0``: exact
    EMD, a permutation (emitted as one; B's function is unchanged); ``reg>0``: entropic
    Sinkhorn with ε = reg on C/``cost_scale``, a soft map. Not pairwise-only: ``merge`` with N
    checkpoints aligns every model to the first (the target) and averages — the paper's
    multi-model fusion. Spaces with groups > 1 (attention heads) stay unaligned for now.

    Example: ``weightlab merge a.safetensors b.safetensors --matcher ot
    --matcher-param basis=activations --matcher-param reg=0.01``.
    """

    name = "ot"
    summary = "OT fusion (Singh & Jaggi 2020): align channels by an exact or entropic OT plan"

    @dataclass
    class Params:
        basis: str = param("weights", "channel supports: weights (layer by layer, no data) or "
                                      "activations (calibration features)",
                           choices=("weights", "activations"))
        reg: float = param(0.0, "entropic regularisation ε (0: exact EMD, a permutation; "
                                ">0: Sinkhorn, a soft map)", min=0.0)
        cost_scale: str = param("max", "the cost is divided by its max or mean (or not: none) "
                                       "before Sinkhorn, so reg is relative; EMD ignores it",
                                choices=("max", "mean", "none"))
        max_iter: int = param(10000, "Sinkhorn iterations at most (reg > 0)", min=1)
        samples: int = param(4096, "calibration samples to read (basis=activations)", min=1)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.params.basis == "activations"

    def match(self, graph, ref, other, data=None):
        from weightlab.errors import UsageError

        from weightlab_ot.fusion import ot_fusion

        p = self.params
        stats = None
        if p.basis == "activations":
            if data is None:
                raise UsageError("matcher ot with basis=activations needs calibration data "
                                 "(--data); basis=weights needs none")
            from weightlab.matching.features import collect_feature_stats

            spaces = [s.id for s in graph.free_spaces() if s.groups == 1]  # heads: unaligned
            stats = collect_feature_stats([ref, other], graph, data, p.samples, spaces)
        out = ot_fusion(graph, ref.state_dict(), other.state_dict(), basis=p.basis,
                        stats=stats, reg=p.reg, max_iter=p.max_iter, cost_scale=p.cost_scale)
        out.info["params"] = self.params_dict()
        return out
