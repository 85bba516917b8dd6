"""The sinkhorn plugin's matcher. Torch is imported inside ``match`` so that listing
components stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.params import param


class SinkhornRebasin(Matcher):
    """Sinkhorn re-basin (Peña, Medeiros, Tuytelaars & Ballester, CVPR 2023): per free channel
    space a soft permutation P̃ = Sinkhorn(L/τ) (log domain, ``iterations`` row/column
    normalizations) of learned logits L, B mapped by P̃ on every entry of the space, and L
    learned by ``steps`` of Adam on ``objective``: ``weight`` maximizes
    Σ ⟨W_A, P̃(W_B)⟩ / (‖θ_A‖‖θ_B‖) (the paper's weight-matching loss, no data); ``midpoint``
    minimizes the cross-entropy of ½(θ_A + P̃(θ_B)) on calibration batches (the paper's
    L_MID; needs data). Gradients go through the unrolled iterations by autograd (the paper's
    implicit differentiation only saves memory). The result is the hard permutation
    maximizing each space's final logits (linear assignment). ``init=weight`` starts the
    logits at the weight-matching solution. Runs on the models' device. Attention head spaces
    (groups > 1) stay identity.

    Example: ``weightlab merge a.safetensors b.safetensors --matcher sinkhorn
    --matcher-param objective=midpoint --data mnist``.
    """

    name = "sinkhorn"
    summary = ("Sinkhorn re-basin (Peña et al. 2023): soft permutations learned by gradient "
               "descent through Sinkhorn")

    @dataclass
    class Params:
        objective: str = param("weight", "weight: maximize Σ⟨W_A, P̃(W_B)⟩ (no data); midpoint: "
                                         "the loss of ½(θ_A + P̃(θ_B)) on calibration data",
                               choices=("weight", "midpoint"))
        tau: float = param(1.0, "Sinkhorn temperature τ (plan = Sinkhorn(logits/τ))", min=0.0,
                           min_exclusive=True)
        iterations: int = param(20, "Sinkhorn row/column normalizations per step", min=1)
        steps: int = param(0, "Adam steps on the logits (0: 200 for weight, 50 for midpoint)",
                           min=0)
        lr: float = param(0.1, "Adam learning rate on the logits", min=0.0,
                          min_exclusive=True)
        init: str = param("zero", "initial logits: zero (uniform plan) or weight (the "
                                  "weight-matching solution)", choices=("zero", "weight"))
        seed: int = param(0, "torch seed (and weight matching's, for init=weight)", min=0)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.params.objective == "midpoint"

    def steps(self) -> int:
        p = self.params
        return p.steps or (200 if p.objective == "weight" else 50)

    def match(self, graph, ref, other, data=None):
        from weightlab.errors import UsageError

        from weightlab_sinkhorn.rebasin import sinkhorn_rebasin

        p = self.params
        if p.objective == "midpoint" and data is None:
            raise UsageError("matcher sinkhorn with objective=midpoint needs calibration data "
                             "(--data); objective=weight needs none")
        out = sinkhorn_rebasin(graph, ref, other, objective=p.objective, tau=p.tau,
                               iterations=p.iterations, steps=self.steps(), lr=p.lr,
                               seed=p.seed, init=p.init, data=data)
        out.info["params"] = self.params_dict()
        return out
