"""The snapshot of timm's classifiers: every name ``timm.list_models()`` returns, with its
default pretrained configuration (input size, mean, std, whether the input size is fixed).

Reading it costs a JSON parse, not a timm import (~1 s with torch), so resolving a model name
stays cheap. ``python -m weightlab_timm.catalog`` rewrites it from the installed timm; the
plugin's tests fail when it is out of step.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("models.json")


@cache
def load() -> dict[str, Any]:
    """``{"timm": version, "norms": [[mean, std], …], "models": {name: [C, H, W, norm, fixed]}}``
    (``norm`` indexes ``norms``; ``fixed`` is 1 when timm builds the model for one input
    size, its ``fixed_input_size``)."""
    return json.loads(PATH.read_text())


def names() -> dict[str, Any]:
    return load()["models"]


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The parts of timm's default pretrained configuration weightlab uses."""
    c, h, w, norm, fixed = names()[name]
    mean, std = load()["norms"][norm]
    return {"input_size": (c, h, w), "mean": tuple(mean), "std": tuple(std),
            "fixed_input_size": bool(fixed)}


def snapshot() -> dict[str, Any]:
    """The catalogue as the installed timm gives it."""
    import timm

    norms: list[list[list[float]]] = []
    models: dict[str, list[Any]] = {}
    for name in timm.list_models():
        cfg = timm.get_pretrained_cfg(name)
        cfg = cfg.to_dict() if cfg is not None else {}
        size = list(cfg.get("input_size") or (3, 224, 224))
        norm = [[float(x) for x in cfg.get("mean") or timm.data.IMAGENET_DEFAULT_MEAN],
                [float(x) for x in cfg.get("std") or timm.data.IMAGENET_DEFAULT_STD]]
        if norm not in norms:
            norms.append(norm)
        models[name] = [*size, norms.index(norm), int(bool(cfg.get("fixed_input_size")))]
    return {"timm": timm.__version__, "norms": norms, "models": models}


def main() -> None:
    snap = snapshot()
    PATH.write_text(json.dumps(snap, separators=(",", ":")) + "\n")
    print(f"wrote {PATH}: {len(snap['models'])} models of timm {snap['timm']}")


if __name__ == "__main__":
    main()
