"""PNG plots written atomically with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weightlab.atomic import atomic_path


def save_png(path: str | Path, draw: Callable, *, size=(6.4, 4.2)) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        draw(fig, ax)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return Path(path)


def plot_curve(path: str | Path, res: dict, splits: list[str]) -> Path:
    """Top-1 along the interpolation path (the result of ``weightlab.interpolate``)."""

    def draw(fig, ax):
        for s in splits:
            ax.plot(res["alpha"], [100 * v for v in res[s]["top1"]], marker="o", label=s)
        ax.set_xlabel("α (0 = model A, 1 = aligned model B)")
        ax.set_ylabel("top-1 accuracy (%)")
        title = res["matcher"] + (f" + {res['normalizer']}" if res["normalizer"] else "")
        ax.set_title(f"linear interpolation: {title}")
        ax.grid(alpha=0.3)
        ax.legend()

    return save_png(path, draw)


def plot_vanishing(path: str | Path, res: dict) -> Path:
    """E_l against relative depth (the result of ``weightlab.vanishing``)."""

    def draw(fig, ax):
        ax.plot(res["relative_depth"], res["ratio"], marker="o", label=res["target_label"])
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("relative depth")
        ax.set_ylabel("E_l = m_l(target) / m_l(references)")
        ax.set_title("vanishing feature")
        ax.grid(alpha=0.3)
        ax.legend()

    return save_png(path, draw)
