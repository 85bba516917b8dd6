"""The built-in matchers. Torch is imported inside ``match`` so that listing stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.errors import UsageError
from weightlab.params import param


class Identity(Matcher):
    """No alignment: B's channels stay where they are (naive averaging).

    Example: ``weightlab merge a.safetensors b.safetensors --matcher identity``.
    """

    name = "identity"
    needs_graph = False
    summary = "no alignment (naive weight averaging)"

    def match(self, graph, ref, other, data=None):
        from weightlab.alignment import Alignment

        out = Alignment.identity(graph)
        out.info["matcher"] = self.name
        return out


class Weight(Matcher):
    """Git Re-Basin weight matching (Ainsworth et al. 2023): maximise Σ ⟨W_A, P(W_B)⟩ over
    all weights and norm parameters by coordinate descent over the free channel spaces, each
    step an exact linear assignment. Needs no data. BatchNorm running statistics are not in
    the objective, as in the reference code (flax keeps them outside the parameters);
    ``include_bn_stats=true`` counts them too (weightlab's earlier behaviour).

    Example: ``weightlab merge a.safetensors b.safetensors --matcher weight
    --matcher-param max_iter=100 --matcher-param seed=0``.
    """

    name = "weight"
    summary = "Git Re-Basin weight matching (coordinate descent of exact assignments)"

    @dataclass
    class Params:
        max_iter: int = param(100, "coordinate-descent sweeps at most", min=1)
        seed: int = param(0, "seed of the space visiting order", min=0)
        tol: float = param(1e-12, "a sweep must raise the objective by more than this "
                                  "(relative) to continue", min=0.0)
        precision: str = param("float64", "dtype of the similarity matrices",
                               choices=("float64", "float32"))
        include_bn_stats: bool = param(False, "count BatchNorm running means/variances in the "
                                              "objective (the reference code does not)")

    def match(self, graph, ref, other, data=None):
        import torch

        from weightlab.matching.weight import weight_matching

        p = self.params
        return weight_matching(graph, ref.state_dict(), other.state_dict(),
                               max_iter=p.max_iter, seed=p.seed, tol=p.tol,
                               dtype=getattr(torch, p.precision),
                               include_bn_stats=p.include_bn_stats)


class Activation(Matcher):
    """Activation matching: one pass over calibration data through both models; per free
    space, the assignment maximising the similarity of A's and B's post-activation features
    (over samples and spatial positions): ``similarity=inner`` E[A_i B_j], Git Re-Basin §3.1's
    objective and its code (default), or ``correlation`` (Pearson; scale- and offset-free).

    Example: ``weightlab merge a.safetensors b.safetensors --matcher activation
    --matcher-param samples=5000 --matcher-param similarity=correlation``.
    """

    name = "activation"
    summary = "match channels by the similarity of their features on calibration data"
    needs_data = True

    @dataclass
    class Params:
        samples: int = param(5000, "calibration samples to read", min=1)
        similarity: str = param("inner", "inner: E[A·B], Git Re-Basin's objective; correlation: "
                                         "Pearson correlation", choices=("inner", "correlation"))

    def match(self, graph, ref, other, data=None):
        from weightlab.matching.activation import activation_matching

        if data is None:
            raise UsageError("matcher activation needs calibration data: pass data=NAME")
        return activation_matching(graph, ref, other, data, self.params.samples,
                                   self.params.similarity)
