"""``weightlab plot``: several configurations' saved results overlaid in one figure, drawn by
the same core functions as ``interpolate --plot`` and ``diagnose --plot``. What is drawn is read
back from the matplotlib figure as it is saved."""

from __future__ import annotations

import json

import matplotlib
import pytest
from weightlab import plotting, testing
from weightlab.errors import UsageError

matplotlib.use("Agg")


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved: its title, and per axes the y label, y limits and line labels."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def capture(fig, *args, **kwargs):
        figures.append({
            "title": fig._suptitle.get_text() if fig._suptitle else "",
            "legend": [t.get_text() for leg in fig.legends for t in leg.get_texts()],
            "axes": [{"ylabel": ax.get_ylabel(), "ylim": ax.get_ylim(),
                      "lines": [ln.get_label() for ln in ax.get_lines()]} for ax in fig.axes]})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return figures


@pytest.fixture(scope="module")
def pair():
    """Two digits MLPs (3 epochs, seeds 0 and 1), cached across the session."""
    return testing.trained("mlp", "digits", epochs=3)


def test_interpolations_of_three_configurations_in_one_figure(pair, tmp_path, cli, drawn):
    """Naive, weight matching and weight matching + REPAIR on the digits pair, 3 points each;
    measured here: the naive midpoint's test top-1 is the lowest of the three."""
    results = []
    for i, opts in enumerate((["--matcher", "identity"], ["--matcher", "weight"],
                              ["--matcher", "weight", "--normalizer", "repair"])):
        code, out, err = cli("interpolate", *pair, *opts, "--points", "3", "--splits", "test",
                             "--json", "--device", "cpu", "--calibration-samples", "512")
        assert code == 0, err
        (tmp_path / f"r{i}.json").write_text(out)
        results.append(json.loads(out))
    fig_path = tmp_path / "cmp.png"
    code, _, err = cli("plot", *[tmp_path / f"r{i}.json" for i in range(3)], "-o", fig_path)
    assert code == 0, err
    assert fig_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = drawn
    assert fig["title"] == "Linear interpolation — mlp on digits: " + " ↔ ".join(
        f"{p.parent.name}/{p.stem}" for p in pair)
    loss_ax, acc_ax = fig["axes"]
    assert "loss" in loss_ax["ylabel"] and "top-1" in acc_ax["ylabel"]
    assert loss_ax["lines"] == ["naive", "weight", "weight + repair"]
    assert acc_ax["lines"][:3] == ["naive", "weight", "weight + repair"]
    assert "endpoints' mean" in acc_ax["lines"][3]
    assert acc_ax["ylim"][1] == 100 and acc_ax["ylim"][0] <= 80  # never 95–100 %
    lowest = min(min(r["test"]["top1"]) for r in results)
    assert acc_ax["ylim"][0] <= 100 * lowest - 5
    assert fig["legend"][:3] == ["naive", "weight", "weight + repair"]


def test_interpolate_and_diagnose_plots_use_the_same_figures(pair, tmp_path, cli, drawn):
    code, _, err = cli("diagnose", *pair, "--matcher", "identity", "--samples", "256",
                       "--plot", tmp_path / "d.png", "--device", "cpu")
    assert code == 0, err
    (fig,) = drawn
    ratio_ax, m_ax = fig["axes"]
    assert fig["title"].startswith("Vanishing feature — mlp on digits")
    assert ratio_ax["ylabel"].startswith(r"$E_\ell")  # mathtext, not a literal "E_l"
    assert ratio_ax["lines"] == ["merged (identity)", r"$E_\ell = 1$ (no loss)"]
    assert ratio_ax["ylim"][0] == 0
    assert m_ax["lines"][1:] == [f"{p.parent.name}/{p.stem}" for p in pair]


def test_helpers_and_bad_input(tmp_path):
    assert plotting.accuracy_floor([96.0, 99.5]) == 80.0  # a 5 % dip on a 20-point axis
    assert plotting.accuracy_floor([12.0, 98.0]) == 0.0
    assert plotting.config_label({"matcher": "identity", "normalizer": None}) == "naive"
    assert plotting.config_label({"matcher": "weight", "normalizer": "repair"}) == \
        "weight + repair"
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(UsageError, match=r"bad.json: expected the JSON that 'weightlab "
                                         r"interpolate --json'"):
        plotting.plot_files([bad], tmp_path / "x.png")
    interp = tmp_path / "i.json"
    interp.write_text(json.dumps({"alpha": [0, 1], "test": {"loss": [1, 1], "top1": [1, 1]}}))
    diag = tmp_path / "d.json"
    diag.write_text(json.dumps({"ratio": [1], "relative_depth": [0]}))
    with pytest.raises(UsageError, match="cannot overlay interpolation and diagnose"):
        plotting.plot_files([interp, diag], tmp_path / "x.png")
    with pytest.raises(UsageError, match="2 labels for 1 results"):
        plotting.plot_files([interp], tmp_path / "x.png", labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()


def test_sweep_figure_has_the_dense_reference_and_an_honest_axis(tmp_path, drawn):
    records = [{"sparsity_target": s, "dense": {"top1": 0.983}, "pruned": {"top1": p},
                "normalized": {"top1": n}, "normalizer": "repair", "pruner": "magnitude"}
               for s, p, n in ((0.5, 0.983, 0.986), (0.9, 0.936, 0.967), (0.95, 0.747, 0.945))]
    plotting.sweep_figure(records, tmp_path / "s.png")
    (fig,) = drawn
    (ax,) = fig["axes"]
    assert ax["lines"] == ["dense (98.3 %)", "one-shot pruned", "pruned + repair"]
    assert ax["ylim"] == (60.0, 100.0)  # 74.7 % - 5 → 60: the collapse at 95 % shows as such
