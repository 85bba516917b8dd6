"""Figures for papers, written atomically as PNG with matplotlib's Agg backend (no display).

- :func:`interpolation_figure`: loss and top-1 along θ(α) = (1−α)θ_A + α·align(θ_B), one
  panel each, several configurations (naive, weight matching, + REPAIR …) overlaid; the
  endpoints' mean accuracy as the reference line the accuracy barrier is measured from.
- :func:`diagnose_figure`: the vanishing-feature ratio E_ℓ = m_ℓ(target) / mean_i m_ℓ(model_i)
  against relative depth (reference line E_ℓ = 1), and each model's m_ℓ (log scale).
- :func:`compare_figure` / :func:`pruning_compare_figure`: ``weightlab compare``'s merged
  accuracies per combination, or accuracy against sparsity per pruner × normalizer.
- :func:`plot_files`: either figure from the JSON that ``interpolate --json`` and
  ``diagnose --json`` print (``weightlab plot``).

Accuracy axes span 0–100 % and ratio axes start at 0: a 5 % dip stays a 5 % dip.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from weightlab.atomic import atomic_path
from weightlab.errors import UsageError

SPLIT_STYLE = {"test": "-", "train": "--"}


def preload() -> None:
    """Import matplotlib (Agg) now: a caller that waits on workers anyway (a recipe on an
    executor) does it while they run, not after them (about 0.3 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def save_png(path: str | Path, draw: Callable, *, size=(6.4, 4.2), ncols: int = 1) -> Path:
    """Call ``draw(fig, ax)`` (``ax`` a list when ``ncols`` > 1) and write the PNG; ``draw``
    may return the (left, bottom, right, top) figure area the axes are laid out in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=size, squeeze=True)
    try:
        rect = draw(fig, list(ax) if ncols > 1 else ax)  # a figure-level legend returns the
        fig.tight_layout(rect=rect)                      # area left for the axes
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=150)
    finally:
        plt.close(fig)
    return Path(path)


def short_name(path: str) -> str:
    """``runs/pair/model_1.safetensors`` → ``pair/model_1``."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def config_label(res: dict[str, Any]) -> str:
    """The configuration a result was computed with: ``naive``, ``weight``, ``weight + repair``."""
    if res.get("label"):
        return str(res["label"])
    matcher = res.get("matcher") or "identity"
    name = "naive" if matcher == "identity" else matcher
    return name + (f" + {res['normalizer']}" if res.get("normalizer") else "")


def _subject(results: Sequence[dict[str, Any]], paths_key: str) -> str:
    """'mlp on digits: pair/model_1 ↔ pair/model_2' from what the results record."""
    first = results[0]
    where = " on ".join(x for x in (first.get("model"), first.get("data")) if x)
    models = first.get(paths_key) or []
    pair = " ↔ ".join(short_name(m) for m in models[:3]) + (" …" if len(models) > 3 else "")
    return ": ".join(x for x in (where, pair) if x)


def accuracy_floor(values_pct: Sequence[float], span: float = 20.0) -> float:
    """Lower y-limit of an accuracy axis that ends at 100 %: a multiple of 10 at least 5
    points below the lowest value, and at least ``span`` points below 100 — so the axis is
    never auto-scaled to 95–100 % (where a 5 % dip looks like a collapse)."""
    import math

    low = min(values_pct) - 5.0
    return max(0.0, min(10.0 * math.floor(low / 10.0), 100.0 - span))


def interpolation_figure(results: Sequence[dict[str, Any]], path: str | Path, *,
                         splits: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Loss (left) and top-1 (right) against α for each result of
    :func:`weightlab.interpolation.curve`; one colour per configuration, test solid and train
    dashed. Accuracy spans 0–100 %, with the endpoints' mean test accuracy ½(A(0) + A(1)) of
    the first result as the dotted reference."""
    import matplotlib.pyplot as plt

    splits = list(splits or [s for s in ("test", "train") if s in results[0]])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def draw(fig, axes):
        ax_loss, ax_acc = axes
        for i, res in enumerate(results):
            color = colors[i % len(colors)]
            for s in splits:
                if s not in res:
                    continue
                label = f"{config_label(res)} ({s})" if len(splits) > 1 else config_label(res)
                ax_loss.plot(res["alpha"], res[s]["loss"], SPLIT_STYLE.get(s, "-"),
                             marker="o", ms=3, color=color, label=label)
                ax_acc.plot(res["alpha"], [100 * v for v in res[s]["top1"]],
                            SPLIT_STYLE.get(s, "-"), marker="o", ms=3, color=color, label=label)
        ref_split = "test" if "test" in results[0] else splits[0]
        top1 = results[0][ref_split]["top1"]
        ax_acc.axhline(50 * (top1[0] + top1[-1]), color="gray", ls=":", lw=1,
                       label=r"endpoints' mean $\frac{1}{2}(A_0 + A_1)$ (" + ref_split + ")")
        ax_loss.set_ylabel(r"loss $L(\alpha)$ (cross-entropy)")
        ax_acc.set_ylabel(r"top-1 accuracy $A(\alpha)$ (%)")
        ax_loss.set_ylim(bottom=0)
        shown = [100 * v for r in results for s in splits if s in r for v in r[s]["top1"]]
        ax_acc.set_ylim(accuracy_floor(shown), 100)
        for ax in axes:
            ax.set_xlabel(r"$\alpha$  (0 = model A, 1 = aligned model B)")
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
        handles, names = ax_acc.get_legend_handles_labels()
        rows = -(-len(handles) // 4)
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(handles)), fontsize=8,
                   frameon=False)
        fig.suptitle(title or f"Linear interpolation — {_subject(results, 'models')}",
                     fontsize=11)
        return (0, 0.045 * rows + 0.02, 1, 1)

    return save_png(path, draw, size=(11, 4.2 + 0.2 * max(0, len(results) - 1)), ncols=2)


def diagnose_label(res: dict[str, Any]) -> str:
    """The legend name of a diagnostic: its label, else the configuration of a merge made on
    the fly, else the diagnosed checkpoint's name (``merged: naive``)."""
    if res.get("label"):
        return str(res["label"])
    if res.get("target_path"):
        return f"{res.get('target_label', 'target')}: {Path(res['target_path']).stem}"
    return str(res.get("target_label") or config_label(res))


def diagnose_figure(results: Sequence[dict[str, Any]], path: str | Path, *,
                    title: str | None = None) -> Path:
    """E_ℓ against relative depth for each result of :func:`weightlab.vanishing.diagnose`
    (left; E_ℓ = 1: the target keeps its references' input-induced features), and the
    magnitudes m_ℓ of the references (gray) and targets (right, log scale)."""
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def draw(fig, axes):
        ax_ratio, ax_m = axes
        top = 1.0
        for i, res in enumerate(results):
            color = colors[i % len(colors)]
            label = diagnose_label(res)
            ax_ratio.plot(res["relative_depth"], res["ratio"], marker="o", ms=3, color=color,
                          label=label)
            ax_m.plot(res["relative_depth"], res["target"]["m"], marker="o", ms=3,
                      color=color, label=label)
            top = max(top, *res["ratio"])
        first = results[0]
        for j, ref in enumerate(first["references"]):
            names = first.get("labels") or []
            ref_label = short_name(names[j]) if j < len(names) else f"model {j + 1}"
            ax_m.plot(first["relative_depth"], ref["m"], color="gray", lw=1,
                      ls=["-", "--", ":", "-."][j % 4], label=ref_label)
        ax_ratio.axhline(1.0, color="gray", ls=":", lw=1, label=r"$E_\ell = 1$ (no loss)")
        ax_ratio.set_ylim(0, 1.1 * top)
        ax_ratio.set_ylabel(r"$E_\ell = m_\ell(\mathrm{target})\,/\,"
                            r"\overline{m}_\ell(\mathrm{references})$")
        ax_m.set_yscale("log")
        ticker = plt.matplotlib.ticker
        ax_m.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_m.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax_m.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax_m.set_ylabel(r"$m_\ell = \mathrm{mean}_x\,\|f_\ell(x) - f_\ell(0)\|_2/\sqrt{n_\ell}$")
        for ax in axes:
            ax.set_xlabel(r"relative depth $\ell / (L-1)$")
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title or f"Vanishing feature — {_subject(results, 'labels')}",
                     fontsize=11)

    return save_png(path, draw, size=(11, 4.2), ncols=2)


def sweep_figure(records: Sequence[dict[str, Any]], path: str | Path, *, title: str = ""
                 ) -> Path:
    """Test top-1 against sparsity for a pruning sweep (:func:`weightlab.pruning.sweep`): the
    dense model as the dashed reference, one-shot pruned, and pruned + the normalizer."""

    def draw(fig, ax):
        xs = [100 * r["sparsity_target"] for r in records]
        shown = []
        if records and "dense" in records[0]:
            dense = 100 * records[0]["dense"]["top1"]
            ax.axhline(dense, color="gray", ls="--", lw=1, label=f"dense ({dense:.1f} %)")
            shown.append(dense)
        pruned = [100 * r["pruned"]["top1"] for r in records]
        ax.plot(xs, pruned, "o-", label="one-shot pruned")
        shown += pruned
        if records and "normalized" in records[0]:
            fixed = [100 * r["normalized"]["top1"] for r in records]
            ax.plot(xs, fixed, "s-", label=f"pruned + {records[0]['normalizer']}")
            shown += fixed
        ax.set_ylim(accuracy_floor(shown or [0.0]), 100)
        ax.set_xlabel("sparsity (% of the pruned weights removed)")
        ax.set_ylabel("test top-1 accuracy (%)")
        pruner = records[0].get("pruner") if records else None
        ax.set_title(title or (f"One-shot pruning with {pruner}" if pruner else
                               "One-shot pruning"), fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return save_png(path, draw)


def compare_figure(rows: Sequence[dict[str, Any]], ends: Sequence[dict[str, Any]],
                   path: str | Path) -> Path:
    """Merged test top-1 per matcher × normalizer (``weightlab compare``), the endpoints as
    dashed lines."""

    def draw(fig, ax):
        ok = [r for r in rows if r.get("top1") is not None]
        ys = [100 * r["top1"] for r in ok]
        ax.bar(range(len(ok)), ys, color="tab:blue")
        ax.set_xticks(range(len(ok)), [f"{r['matcher']}\n{r['normalizer']}" for r in ok],
                      fontsize=8)
        for i, e in enumerate(ends):
            ax.axhline(100 * e["top1"], color="gray", ls="--", lw=1,
                       label=f"model {i + 1} ({100 * e['top1']:.1f} %)")
        ax.set_ylim(0, 100)
        ax.set_ylabel("merged test top-1 accuracy (%)")
        ax.set_title("Merging methods on the same models", fontsize=11)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)

    return save_png(path, draw)


def pruning_compare_figure(rows: Sequence[dict[str, Any]], dense: Sequence[dict[str, Any]],
                           path: str | Path) -> Path:
    """Test top-1 against sparsity for ``weightlab compare --pruners`` (rows as
    :func:`weightlab.ops.comparing.compare` returns them): one line per pruner × normalizer
    through its fractional sparsities — a colour per pruner, a line style per normalizer —,
    N:M rows as stars at N/M labelled with the pattern, error bars of ± one standard deviation
    over several models, the dense models' mean dashed. Rows that could not run are left
    out."""
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]

    def draw(fig, ax):
        shown: list[float] = []
        pruners = list(dict.fromkeys(r["pruner"] for r in rows))
        norms = list(dict.fromkeys(r["normalizer"] for r in rows))
        for pruner in pruners:
            color = colors[pruners.index(pruner) % len(colors)]
            for norm in norms:
                ok = [r for r in rows if (r["pruner"], r["normalizer"]) == (pruner, norm)
                      and r.get("top1") is not None]
                frac = sorted((r for r in ok if ":" not in r["sparsity"]),
                              key=lambda r: r["target"])
                nm = [r for r in ok if ":" in r["sparsity"]]
                label = pruner if norm == "none" else f"{pruner} + {norm}"
                first = True  # one legend entry per line
                for group, fmt, size in ((frac, "o", 4), (nm, "*", 10)):
                    if not group:
                        continue
                    ys = [100 * r["top1"] for r in group]
                    err = [100 * (r.get("top1_std") or 0.0) for r in group]
                    ax.errorbar([100 * r["target"] for r in group], ys,
                                yerr=err if any(err) else None, fmt=fmt, ms=size,
                                ls=styles[norms.index(norm) % len(styles)] if fmt == "o"
                                else "none", color=color, capsize=3,
                                label=label if first else None)
                    first = False
                    shown += ys
                for r in nm:
                    ax.annotate(r["sparsity"], (100 * r["target"], 100 * r["top1"]),
                                textcoords="offset points", xytext=(7, -10), fontsize=7,
                                color=color)
        if dense:
            mean = 100 * sum(d["top1"] for d in dense) / len(dense)
            what = "dense" if len(dense) == 1 else f"dense, mean of {len(dense)}"
            ax.axhline(mean, color="gray", ls="--", lw=1, label=f"{what} ({mean:.1f} %)")
            shown.append(mean)
        ax.set_ylim(accuracy_floor(shown or [0.0]), 100)
        ax.set_xlabel("sparsity (% of the pruned weights removed)")
        ax.set_ylabel("test top-1 accuracy (%)")
        models = f" (mean ± std over {len(dense)} models)" if len(dense) > 1 else ""
        ax.set_title(f"One-shot pruning: top-1 against sparsity{models}", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return save_png(path, draw)


def result_kind(res: Any) -> str:
    """'interpolation' or 'diagnose' for a result dict; UsageError otherwise."""
    if isinstance(res, dict) and "alpha" in res:
        return "interpolation"
    if isinstance(res, dict) and "ratio" in res and "relative_depth" in res:
        return "diagnose"
    raise UsageError("expected the JSON that 'weightlab interpolate --json' or "
                     "'weightlab diagnose --json' prints (keys alpha, or ratio and "
                     "relative_depth)")


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not JSON ({e})") from None
    try:
        result_kind(res)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
    return res


def plot_files(paths: Sequence[str | Path], out: str | Path, *,
               labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """One figure overlaying the results saved in ``paths`` (all interpolations, or all
    diagnostics); ``labels`` rename the configurations in the legend."""
    results = [load_result(p) for p in paths]
    if labels:
        if len(labels) != len(results):
            raise UsageError(f"{len(labels)} labels for {len(results)} results; give one "
                             f"label per result")
        results = [{**r, "label": lbl} for r, lbl in zip(results, labels, strict=True)]
    kinds = {result_kind(r) for r in results}
    if len(kinds) > 1:
        raise UsageError("cannot overlay interpolation and diagnose results in one figure")
    if kinds == {"interpolation"}:
        return interpolation_figure(results, out, title=title)
    return diagnose_figure(results, out, title=title)
