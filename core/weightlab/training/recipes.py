"""Training recipes: TOML files (data, never code) naming a model, a dataset and the training
settings, run with ``weightlab train --recipe NAME``.

A recipe is looked up by name in the repository's ``recipes/train/NAME.toml`` (or given as a
path). Its tables are validated against the same parameter dataclasses the CLI uses:
``[train]`` → :class:`TrainConfig`, ``[lmc]`` → :class:`LMCConfig`, ``[speed]`` →
:class:`SpeedOptions`; a bad field is an error naming the file and the field. Command-line
flags override recipe values.

Example (``recipes/train/vf-cifar10-resnet20.toml``)::

    model = "cifar_resnet20"
    data = "cifar10"
    models = 2
    [train]
    epochs = 160
    milestones = [32000, 48000]
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightlab.errors import ParamError, UsageError
from weightlab.params import build_params

RECIPE_DIR = Path(__file__).resolve().parents[3] / "recipes" / "train"
TOP_LEVEL = {"description": str, "model": str, "data": str, "models": int, "same_init": bool,
             "heldout": int}
TABLES = ("model_params", "data_params", "train", "lmc", "speed")


@dataclass
class Recipe:
    name: str
    path: Path
    description: str = ""
    model: str | None = None
    data: str | None = None
    models: int | None = None
    same_init: bool | None = None
    heldout: int | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    data_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    lmc: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)


def available() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml")) if RECIPE_DIR.is_dir() else []


def find(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise UsageError(f"recipe={str(p)!r}: no such file")
        return p
    cand = RECIPE_DIR / f"{name_or_path}.toml"
    if cand.is_file():
        return cand
    names = available()
    close = difflib.get_close_matches(str(name_or_path), names, 3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"recipe={name_or_path!r}: no recipe of that name in {RECIPE_DIR}{hint}; "
                     f"known: {', '.join(names) or 'none'}")


def load(name_or_path: str | Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the field."""
    from weightlab.training.config import SpeedOptions, TrainConfig
    from weightlab.training.lmc import LMCConfig

    path = find(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None
    known = set(TOP_LEVEL) | set(TABLES)
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamError(f"{path}: {key}: unknown recipe field{hint}; known: "
                             f"{', '.join(sorted(known))}")
        if key in TABLES and not isinstance(value, dict):
            raise ParamError(f"{path}: {key}: expected a table ([{key}])")
        want = TOP_LEVEL.get(key)
        if want is not None and (not isinstance(value, want)
                                 or (want is int and isinstance(value, bool))):
            raise ParamError(f"{path}: {key}: expected a {TOP_LEVEL[key].__name__}, got "
                             f"{value!r}")
    for table, cls in (("train", TrainConfig), ("lmc", LMCConfig), ("speed", SpeedOptions)):
        build_params(cls, raw.get(table, {}), prefix=f"{path}: {table}.")
    if raw.get("models") is not None and raw["models"] < 1:
        raise ParamError(f"{path}: models: {raw['models']} must be >= 1")
    return Recipe(name=path.stem, path=path, **raw)
