"""Metric sinks: a JSONL file in the run directory, optionally Weights & Biases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WANDB_MODES = ("online", "offline", "disabled")


class MetricLog:
    def __init__(self, path: Path, wandb_mode: str = "disabled", wandb_config: dict | None = None,
                 project: str = "weightlab", run_name: str | None = None):
        self.path = path
        self._wandb = None
        if wandb_mode != "disabled":
            wandb = check_wandb(wandb_mode)
            self._wandb = wandb.init(project=project, name=run_name, mode=wandb_mode,
                                     config=wandb_config or {}, dir=str(path.parent))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            step = record.get("iter")
            self._wandb.log(scalars(record), step=step if isinstance(step, int) else None)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def check_wandb(mode: str) -> Any:
    """The wandb module for ``mode`` (None when disabled); a one-line UsageError for an unknown
    mode or a missing wandb — called before a run writes anything."""
    from weightlab.errors import UsageError

    if mode not in WANDB_MODES:
        raise UsageError(f"wandb_mode={mode!r}: expected one of {', '.join(WANDB_MODES)}")
    if mode == "disabled":
        return None
    try:
        import wandb  # imported only when asked for
    except ImportError:
        raise UsageError(f"wandb_mode={mode}: wandb is not installed (pip install wandb; "
                         f"`make setup` installs it)") from None
    return wandb


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) record with slash-joined keys: {"lmc": {"test": {"loss_barrier":
    …}}} → {"lmc/test/loss_barrier": …}; lists are left out. Per-model values get the model
    number in their key (model2/train_loss) so that K models share one wandb run."""
    out: dict[str, float] = {}
    model = record.get("model") if not prefix else None
    for k, v in record.items():
        key = f"{prefix}{k}"
        if model is not None and k not in ("epoch", "iter", "model", "lr"):
            key = f"model{model}/{key}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[key] = v
        elif isinstance(v, dict):
            out.update(scalars(v, f"{key}/"))
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_after(path: Path, it: int) -> None:
    """Drop records logged after iteration ``it`` (an interrupted epoch that resume redoes)."""
    from weightlab.atomic import write_text

    records = read_jsonl(path)
    kept = [r for r in records if int(r.get("iter", 0)) <= it]
    if len(kept) != len(records):
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
