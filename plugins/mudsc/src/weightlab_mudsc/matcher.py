"""The mudsc plugin's matcher. Torch is imported inside ``match`` so that listing components
stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.params import param


class MuDSC(Matcher):
    """MuDSC (Xu et al., "Training-free Pretrained Model Merging", CVPR 2024): units matched
    on weight- and activation-space similarity at once. Per free channel space the similarity
    is S = α·S_weight + (1 − α)·S_act — S_act the Pearson correlation of A's and B's features
    on calibration data (one pass), S_weight the Pearson correlation of the channels' weight
    vectors (every entry of the space, B's other axes under the current permutations) — and
    the permutations come from Git Re-Basin's coordinate descent on S (each step an exact
    linear assignment), started from the activation-only assignment. Attention heads are
    matched as blocks (group matching; query·key and value·output share the head order).
    α = 1 with ``weight_similarity=inner`` and ``init=identity`` is weight matching; α = 0 is
    activation matching (``similarity=correlation``, or ``inner`` with
    ``activation_similarity=inner``). ``mode=zip``: the authors' zip form — both models'
    units zipped ZipIt!-style on the joint 2C × 2C S (weight vectors expressed in the merged
    spaces), a joint merge of exactly two models; attention heads matched as blocks, value·output
    zipped within the matched heads, query·key permuted (weightlab.matching.heads).

    Example: ``weightlab merge a.safetensors b.safetensors --matcher mudsc
    --matcher-param alpha=0.5 --data mnist``.
    """

    name = "mudsc"
    summary = ("MuDSC (Xu et al. 2024): α·weight + (1−α)·activation similarity; "
               "permutations (heads as blocks) or a ZipIt!-style zip")

    @dataclass
    class Params:
        alpha: float = param(0.5, "balancing factor α: S = α·S_weight + (1−α)·S_act "
                                  "(1: weights only, 0: activations only)", min=0.0, max=1.0)
        weight_similarity: str = param("correlation", "S_weight: correlation (the authors'), "
                                                      "cosine (their use_cos) or inner "
                                                      "(Git Re-Basin's ⟨W_A, P W_B⟩, unnormalized)",
                                       choices=("correlation", "cosine", "inner"))
        activation_similarity: str = param("correlation", "S_act: correlation (the authors') or "
                                                          "inner (E[A·B], unnormalized)",
                                           choices=("correlation", "inner"))
        init: str = param("activation", "starting permutations of the descent: activation "
                                         "(the α = 0 solution, as the authors) or identity",
                          choices=("activation", "identity"))
        mode: str = param("permute", "permute: align B to A by permutations; zip: merge both "
                                     "models' units ZipIt!-style on the same S (a joint merge)",
                          choices=("permute", "zip"))
        zip_a: float = param(0.5, "mode=zip: ZipIt!'s α, factor on a zipped unit's "
                                  "similarities (the authors' MuDSC setting)", min=0.0, max=1.0)
        zip_b: float = param(1.0, "mode=zip: ZipIt!'s β, share of merges a model may make "
                                  "within itself (the authors' MuDSC setting)", min=0.0, max=1.0)
        patience: int = param(5, "mode=zip: stop after this many sweeps without a better value "
                                 "(the authors' tol), keeping the best merges", min=1)
        samples: int = param(5000, "calibration samples to read", min=1)
        max_iter: int = param(100, "coordinate-descent sweeps at most", min=1)
        seed: int = param(0, "seed of the space visiting order", min=0)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        p = self.params
        return p.alpha < 1 or p.init == "activation" or p.mode == "zip"

    @property
    def joint(self) -> bool:  # type: ignore[override]
        return self.params.mode == "zip"

    @property
    def pairwise_only(self) -> bool:  # type: ignore[override]
        return self.params.mode == "zip"

    def match(self, graph, ref, other, data=None):
        from weightlab.errors import UsageError

        from weightlab_mudsc.dual import activation_similarities, mudsc_matching

        p = self.params
        if p.mode == "zip":
            return self.zip(graph, ref, other, data)
        act, count = None, 0
        if self.needs_data:
            if data is None:
                raise UsageError("matcher mudsc needs calibration data (--data) unless "
                                 "alpha=1 and init=identity")
            act, count = activation_similarities(ref, other, graph, data, p.samples,
                                                 p.activation_similarity)
        out = mudsc_matching(graph, ref.state_dict(), other.state_dict(), act, alpha=p.alpha,
                             weight_similarity=p.weight_similarity, init=p.init,
                             max_iter=p.max_iter, seed=p.seed)
        out.info.update(observations=count, params=self.params_dict())
        return out

    def zip(self, graph, ref, other, data):
        from weightlab.errors import UsageError
        from weightlab.matching.features import collect_feature_stats

        from weightlab_mudsc.zip import mudsc_zip

        p = self.params
        if data is None:
            raise UsageError("matcher mudsc with mode=zip needs calibration data (--data)")
        stats = collect_feature_stats([ref, other], graph, data, p.samples)
        out = mudsc_zip(graph, [ref.state_dict(), other.state_dict()], stats, alpha=p.alpha,
                        weight_similarity=p.weight_similarity,
                        activation_similarity=p.activation_similarity, a=p.zip_a, b=p.zip_b,
                        max_iter=p.max_iter, seed=p.seed, patience=p.patience)
        out.info.update(observations=next(iter(stats.values())).count if stats else 0,
                        params=self.params_dict())
        return out
