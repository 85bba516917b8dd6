"""The zipit plugin's matchers. Torch and the algorithms are imported inside the methods so
that listing components stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.params import param

SAMPLES = param(4096, "calibration samples to read", min=1)


class JointMatcher(Matcher):
    """A matcher that merges two models jointly: per free channel space a merge matrix
    (C × 2C) and an unmerge matrix (2C × C) built from the two models' pooled feature
    statistics (one calibration pass for every space, weightlab.matching.features).
    Subclasses implement ``space_matrices(stats, space) -> (merge, unmerge)``; the merged model
    is Σ_k M_k θ_k U_k (see weightlab_zipit.joint). Attention-head spaces are merged head by
    head with the same rule (weightlab.matching.heads)."""

    needs_data = True
    pairwise_only = True
    joint = True

    def space_matrices(self, stats, space):
        raise NotImplementedError

    def match(self, graph, ref, other, data=None):
        from weightlab.errors import UsageError
        from weightlab.matching.features import collect_feature_stats

        if data is None:
            raise UsageError(f"matcher {self.name} needs calibration data (--data)")
        stats = collect_feature_stats([ref, other], graph, data, self.params.samples)
        return self.from_stats(graph, stats)

    def from_stats(self, graph, stats: dict):
        """The joint merge from statistics already collected (one pass can serve several
        matchers; a PFM sweep reuses one alignment for every k)."""
        from weightlab.errors import WeightlabError
        from weightlab.matching.heads import unit_joint_merges

        from weightlab_zipit.joint import JointAlignment

        out = JointAlignment()
        for unit in graph.units():
            for space in unit:
                st = stats.get(space.id)
                if st is None:
                    raise WeightlabError(
                        f"matcher {self.name}: channel space {space.id} (produced by "
                        f"{', '.join(space.producers) or 'no layer'}) has no feature point to "
                        f"read")
                if st.models != 2:
                    raise WeightlabError(f"matcher {self.name} merges exactly two models; the "
                                         f"statistics hold {st.models}")
            if unit[0].groups > 1:  # attention heads: merged head by head (matching.heads)
                out.merges.update(unit_joint_merges(graph, unit, stats, self.space_matrices,
                                                    what=f"matcher {self.name}"))
            else:
                for space in unit:
                    out.merges[space.id] = self.space_matrices(stats[space.id], space)
        count = next(iter(stats.values())).count if stats else 0
        out.info.update(matcher=self.name, joint=True, models=2, observations=count,
                        params=self.params_dict())
        return out


class ZipIt(JointMatcher):
    """ZipIt! (Stoica et al. 2024): per channel space, greedily zip the most correlated pair of
    the two models' 2C features — within a model or across the two — until C remain. A zipped
    feature's correlations become ``a``·min of its members' (a = 0: never zip it again); each
    model may zip at most ⌊(C/2)·``b``⌋ pairs of its own features (b = 0: only cross-model
    merges, which with a = 0 is a permutation). Merge = column-normalized assignment (C × 2C),
    unmerge = assignment (2C × C), one pair per space (a residual-tied space gets one for all
    its tensors), from ONE calibration pass over both models.

    Example::

        weightlab pfm a.safetensors b.safetensors --matcher zipit --matcher-param b=0 --sweep
    """

    name = "zipit"
    summary = "ZipIt!: greedily zip correlated features within and across two models"

    @dataclass
    class Params:
        a: float = param(0.3, "α: factor on a zipped feature's correlations (0: zip each "
                              "feature once)", min=0.0, max=1.0)
        b: float = param(0.125, "β: share of its merges a model may make within itself "
                                "(0: cross-model merges only)", min=0.0, max=1.0)
        samples: int = SAMPLES

    def space_matrices(self, stats, space):
        from weightlab_zipit.zipit import constant_features_alike, zip_match

        corr = constant_features_alike(stats.corr(), stats.cov.diagonal())
        return zip_match(corr, self.params.a, self.params.b)


class CCA(JointMatcher):
    """CCA Merge (Horoi et al. 2024): per channel space, regularized CCA between A's and B's
    features (ridge ``gamma`` on each side's covariance, whitening, an SVD of the whitened
    cross-covariance) gives a linear map T of B's features onto A's; the merged model is the
    average in A's space, ½W_A + ½T W_B T⁻¹ (merge = [½I ½T], unmerge = [I; T⁻¹]). Unlike a
    permutation, T can spread one feature of B over several of A. Statistics come from ONE
    calibration pass over both models.

    Example::

        weightlab pfm a.safetensors b.safetensors --matcher cca --matcher-param gamma=0.1 --sweep
    """

    name = "cca"
    summary = "CCA Merge: map B's features onto A's by regularized CCA, average in A's space"

    @dataclass
    class Params:
        gamma: float = param(0.1, "γ: ridge added to each model's feature covariance before "
                                  "whitening", min=0.0, min_exclusive=True)
        samples: int = SAMPLES

    def space_matrices(self, stats, space):
        from weightlab_zipit.cca import cca_match

        return cca_match(stats.cov, self.params.gamma)
