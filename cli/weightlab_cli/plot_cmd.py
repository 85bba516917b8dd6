"""``weightlab plot RESULT.json [RESULT2.json …] -o FIG.png``."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import FORCE_OPT, info


def plot(
    results: list[Path] = typer.Argument(..., help="JSON printed by 'interpolate --json' or "
                                         "'diagnose --json' (one per configuration)"),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write"),
    label: list[str] = typer.Option(None, "--label", help="legend name of each result, in "
                                    "order (default: from its matcher and normalizer)"),
    title: str = typer.Option(None, "--title", help="figure title (default: the models, data "
                              "and checkpoints the results name)"),
    force: bool = FORCE_OPT,
):
    """One figure overlaying saved results: interpolation curves (loss and top-1 against α) or
    vanishing-feature diagnostics (E_ℓ and m_ℓ against depth) of several configurations, e.g.
    naive vs weight matching vs weight matching + REPAIR."""
    from weightlab.atomic import check_writable
    from weightlab.plotting import plot_files

    check_writable(out, force)
    plot_files(results, out, labels=label or None, title=title)
    info(f"wrote {out}")
