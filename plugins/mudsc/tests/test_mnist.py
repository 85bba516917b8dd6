"""MuDSC on real data: the midpoint of two MNIST MLPs trained from different seeds, and the
``weightlab merge … --matcher mudsc`` command."""

from __future__ import annotations

import json

import pytest
from weightlab import plugins, testing
from weightlab.interpolation import average_states, with_state
from weightlab.metrics import evaluate
from weightlab_cli.main import main


@pytest.mark.slow
def test_mudsc_rescues_the_mnist_midpoint(mnist):
    """Two MLPs (3×512, ReLU; 2 epochs on full MNIST, seeds 0 and 1), 5,000 calibration
    images, the 10,000 test images. Measured (2-core CPU under load): naive midpoint 87.67 %
    (loss 1.647); weight matching 97.47 % (0.120); activation matching 97.25 % (inner, 0.098),
    97.35 % (correlation, 0.104); mudsc α = ½ 97.41 % (0.097, 5 sweeps), α = 0.9 97.44 %
    (0.100), α = 0.7 97.30 % (0.097), α = 0.3 97.44 % (0.099), α = 0.1 97.25 % (0.102),
    α = 1 97.41 % (0.111). Asserted with margins: at α = ½ and 0.9 within 1 point of the
    worse endpoint, 8 points above naive averaging, at a tenth of its loss; α = 0 is
    activation matching with correlation, the same permutations. mode=zip (α = ½, a = 0.5,
    b = 1; the merged model of the joint merge): 97.33 % (0.098, 13 sweeps, stopped by
    patience 5), asserted with the same margins; ZipIt! alone (zipit matcher, its defaults)
    gives 97.10 % (0.106)."""
    from weightlab.matching.activation import activation_matching
    from weightlab_zipit.joint import merged_model

    a, b = mnist["models"]
    graph = testing.trace(a, (1, 28, 28))
    sa, sb = a.state_dict(), b.state_dict()
    test, calibration = mnist["test"], mnist["calibration"]

    def midpoint(state_b):
        return evaluate(with_state(a, average_states([sa, state_b])), test)

    worst_end = min(evaluate(m, test)["top1"] for m in (a, b))
    naive = midpoint(sb)
    assert worst_end > 0.96 and naive["top1"] < 0.92 and naive["loss"] > 1.0
    for alpha in (0.5, 0.9):
        al = plugins.registry().create("matchers", "mudsc", {"alpha": alpha}).match(
            graph, a, b, calibration)
        assert al.is_permutation and al.info["converged"]
        got = midpoint(al.apply(graph, sb))
        assert got["top1"] > worst_end - 0.01 and got["top1"] > naive["top1"] + 0.08, alpha
        assert got["loss"] < naive["loss"] / 10, alpha
    zipped = plugins.registry().create("matchers", "mudsc", {"mode": "zip"}).match(
        graph, a, b, calibration)
    got = evaluate(merged_model([a, b], graph, zipped), test)
    assert got["top1"] > worst_end - 0.01 and got["top1"] > naive["top1"] + 0.08
    assert got["loss"] < naive["loss"] / 10
    zero = plugins.registry().create("matchers", "mudsc", {"alpha": 0.0}).match(
        graph, a, b, calibration)
    corr = activation_matching(graph, a, b, calibration, 5000, "correlation")
    assert all((zero.perms[s] == corr.perms[s]).all() for s in corr.perms)


def test_merge_command_with_the_mudsc_matcher(tmp_path, capsys):
    """``weightlab merge A B --matcher mudsc --data digits`` on two digits MLPs (2×64, 8
    epochs, seeds 0/1; cached; 95.56 / 93.89 % on the 360 test images): the provenance names
    the matcher with every parameter; measured: merged 93.33 %, naive average 72.50 %
    (weight 90.83 %, docs/results.md); asserted above 85 %. A bad alpha is one line, exit 2."""
    paths = testing.trained("mlp", "digits", models=2, epochs=8,
                            model_params={"depth": 2, "width": 64}, train={"lr": 0.05})
    out = tmp_path / "merged.safetensors"
    capsys.readouterr()
    code = main([str(x) for x in ["merge", *paths, "--matcher", "mudsc", "--data", "digits",
                                  "-o", out, "--json"]])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(stdout)
    assert res["provenance"]["matcher"] == {"name": "mudsc", "params": {
        "alpha": 0.5, "weight_similarity": "correlation", "activation_similarity": "correlation",
        "init": "activation", "mode": "permute", "zip_a": 0.5, "zip_b": 1.0, "patience": 5,
        "samples": 5000, "max_iter": 100, "seed": 0}}
    merged = res["evaluation"][-1]
    assert merged["model"].startswith("merged") and merged["top1"] > 0.85
    code = main([str(x) for x in ["merge", *paths, "--matcher", "mudsc", "--matcher-param",
                                  "alpha=2", "-o", tmp_path / "x.safetensors"]])
    _, err = capsys.readouterr()
    assert code == 2 and "alpha" in err and len(err.strip().splitlines()) == 1
