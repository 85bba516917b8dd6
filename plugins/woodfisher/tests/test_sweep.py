"""A sweep computes the Fisher once (``analyze``) and still gives, at every sparsity, exactly
the masks and weights of a separate one-shot run; the shared analysis is never modified."""

import copy

import pytest
import torch
from weightlab import plugins, pruning

SPARSITIES = [0.5, 0.9, 0.95]


@pytest.fixture(scope="module")
def mnist(mnist_mlp):
    dense, bundle = mnist_mlp
    return dense, bundle.loader("calibration", num_samples=200, batch_size=100)


def _spy(pruner):
    """Count ``statistics`` calls; keep a clone of what ``analyze`` returned."""
    calls, kept = [], []
    statistics, analyze = pruner.statistics, pruner.analyze

    def counted(*a, **kw):
        calls.append(1)
        return statistics(*a, **kw)

    def cloned(*a, **kw):
        out = analyze(*a, **kw)
        kept.append((out, {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                           for k, v in out.stats.items()}))
        return out

    pruner.statistics, pruner.analyze = counted, cloned
    return calls, kept


@pytest.mark.parametrize("name, values, start", [
    ("woodfisher", {"samples": 200, "block_size": 64}, None),
    ("woodfisher", {"samples": 200, "block_size": 64, "selection": "per_layer"}, 0.3),
    ("diag_fisher", {"samples": 200}, None),
    ("diag_fisher", {"samples": 200}, 0.3),
])
def test_sweep_equals_separate_one_shot_runs(mnist, name, values, start):
    """``start``: an already sparse model (random 30% masks) — the analysis is of the masked
    model and every old zero stays."""
    dense, calibration = mnist
    reg = plugins.registry()
    masks = {}
    if start:
        dense = copy.deepcopy(dense)
        masks = reg.create("pruners", "random", {"seed": 4}).prune(dense, start, {})
    pruner = reg.create("pruners", name, values)
    calls, kept = _spy(pruner)
    swept = {}
    records = pruning.sweep(dense, pruner, SPARSITIES, masks=masks, pruner_data=calibration,
                            on_result=lambda s, m, k, r: swept.setdefault(s, (m, k)))
    assert len(calls) == 1 and len(kept) == 1  # the statistics: once for three sparsities
    assert records[0]["seconds"]["analyze"] > 0
    for s in SPARSITIES:
        model, sweep_masks = swept[s]
        ref_model, ref_masks, rec = pruning.one_shot(dense, reg.create("pruners", name, values),
                                                     s, masks=masks, pruner_data=calibration)
        assert set(sweep_masks) == set(ref_masks)
        assert all(torch.equal(sweep_masks[n], ref_masks[n]) for n in ref_masks)
        ref_state = ref_model.state_dict()
        assert all(torch.equal(t, ref_state[k]) for k, t in model.state_dict().items())
        assert all(not (sweep_masks[n] & ~m).any() for n, m in masks.items())
        assert rec["sparsity"] == pytest.approx(s, abs=1e-5)
    analysis, before = kept[0]
    # every result equals a fresh run, so each update started from the dense weights; and no
    # sparsity's OBS update wrote into the shared F⁻¹ (or scores)
    for k, v in before.items():
        if torch.is_tensor(v):
            assert torch.equal(analysis.stats[k], v)
        elif isinstance(v, dict) and k == "scores":
            assert all(torch.equal(analysis.stats[k][n], t) for n, t in v.items())

