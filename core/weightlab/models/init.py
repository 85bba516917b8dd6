"""Initialization schemes, named with optional parameters: ``NAME[:key=value[,key=value]]``.

- ``default``: PyTorch's own (Kaiming-uniform with a=√5 for conv/linear);
- ``vgg_init``: the seed code's ``--special-init vgg_init`` (conv: Kaiming normal, fan-out,
  ReLU gain; linear: N(0, 0.01²));
- ``lecun_normal``: N(0, 1/fan_in) (flax's default, the seed's ``lecun_normal``);
- ``normal:std=σ,mean=μ``: N(μ, σ²) on every conv/linear weight (the VF linear-MLP notebook:
  ``normal:std=0.002``);

- ``uniform:a=…,b=…``: U(a, b);
- ``kaiming_normal`` / ``kaiming_uniform`` ``:mode=fan_in|fan_out,nonlinearity=relu|linear|…,
  a=…`` (He et al. 2015);
- ``xavier_normal`` / ``xavier_uniform`` ``:gain=…`` (Glorot & Bengio 2010).

Conv/linear weights include ``nn.MultiheadAttention``'s query, key and value projections (bare
parameters, not Linear modules), each drawn as its own E × E linear, and its output projection.
Every scheme but ``default`` zeroes conv/linear biases (and the attention's input-projection
bias) and sets norm layers to γ = 1, β = 0, as the seed code does after its special inits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads when a model is built, not when the families are listed
    from torch import nn

# scheme → its parameters and their defaults
SCHEMES: dict[str, dict[str, Any]] = {
    "default": {}, "vgg_init": {}, "lecun_normal": {},
    "normal": {"mean": 0.0, "std": 0.01},
    "uniform": {"a": -0.05, "b": 0.05},
    "kaiming_normal": {"a": 0.0, "mode": "fan_in", "nonlinearity": "relu"},
    "kaiming_uniform": {"a": 0.0, "mode": "fan_in", "nonlinearity": "relu"},
    "xavier_normal": {"gain": 1.0},
    "xavier_uniform": {"gain": 1.0},
}
INIT_SCHEMES = tuple(SCHEMES)
INIT_HELP = ("initialization: " + ", ".join(INIT_SCHEMES) +
             "; parameters as NAME:key=value,… e.g. normal:std=0.002")


def _draw(w, name: str, p: dict[str, Any], conv: bool) -> None:
    """One weight tensor (or a view of one) drawn in place by scheme ``name``."""
    import torch
    from torch import nn

    with torch.no_grad():
        if name == "vgg_init":
            if conv:  # Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (k·k·C_out))
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(w, 0.0, 0.01)
        elif name == "lecun_normal":  # std = 1/sqrt(fan_in)
            nn.init.normal_(w, 0.0, 1.0 / math.sqrt(w[0].numel()))
        elif name == "normal":
            nn.init.normal_(w, p["mean"], p["std"])
        elif name == "uniform":
            nn.init.uniform_(w, p["a"], p["b"])
        elif name in ("kaiming_normal", "kaiming_uniform"):
            fn = nn.init.kaiming_normal_ if name == "kaiming_normal" else nn.init.kaiming_uniform_
            fn(w, a=p["a"], mode=p["mode"], nonlinearity=p["nonlinearity"])
        else:
            fn = nn.init.xavier_normal_ if name == "xavier_normal" else nn.init.xavier_uniform_
            fn(w, gain=p["gain"])


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"normal:std=0.002"`` → ``("normal", {"mean": 0.0, "std": 0.002})``; a ValueError
    names an unknown scheme, key or a value of the wrong type."""
    import difflib

    name, _, rest = str(spec).partition(":")
    name = name.strip()
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, INIT_SCHEMES, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{spec!r}: unknown initialization{hint}; expected one of "
                         f"{', '.join(INIT_SCHEMES)}")
    values = dict(SCHEMES[name])
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or key not in values:
            known = ", ".join(values) or "none"
            raise ValueError(f"{spec!r}: {item!r} is not key=value with a key of {name} "
                             f"(keys: {known})")
        if isinstance(values[key], float):
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"{spec!r}: {key}={raw!r} is not a number") from None
        else:
            values[key] = raw.strip()
    if name == "normal" and values["std"] <= 0:
        raise ValueError(f"{spec!r}: std must be > 0")
    if name == "uniform" and not values["a"] < values["b"]:
        raise ValueError(f"{spec!r}: expected a < b")
    return name, values


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    name, p = parse_spec(scheme)
    if name == "default":
        return model
    from torch import nn

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _draw(m.weight, name, p, conv=isinstance(m, nn.Conv2d))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            # its input projections are bare parameters, not Linear modules: each of Q, K, V
            # is drawn as the E × E linear it is (fans of one projection, not of the packed
            # 3E × E tensor); out_proj is a Linear and is drawn above
            e = m.embed_dim
            if m._qkv_same_embed_dim:
                for i in range(3):
                    _draw(m.in_proj_weight[i * e:(i + 1) * e], name, p, conv=False)
            else:
                for w in (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight):
                    _draw(w, name, p, conv=False)
            if m.in_proj_bias is not None:
                nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, norms) or type(m).__name__ == "ChannelLayerNorm":
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model
