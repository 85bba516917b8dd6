"""Parameter and multiply-accumulate counts of conv and linear layers, dense and non-zero.

A conv's MACs per image = H_out·W_out·C_out·(C_in/groups)·k_h·k_w; a linear's = in·out.
Non-zero MACs scale each layer by its weight density (sparse models). FLOPs = 2·MACs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def count(model: nn.Module, input_shape: Sequence[int], masks: dict | None = None
          ) -> dict:
    names = {m: n for n, m in model.named_modules()}
    rows: list[dict] = []

    def hook(mod, inp, out):
        w = mod.weight
        if isinstance(mod, nn.Conv2d):
            per_out = w[0].numel()  # (C_in/groups)·k_h·k_w
            macs = out[0].numel() * per_out
        else:
            macs = out[0].numel() * w.shape[1]
        key = f"{names[mod]}.weight"
        m = (masks or {}).get(key)
        nz = int(m.sum()) if m is not None else int((w != 0).sum())
        density = nz / w.numel()
        bias = mod.bias.numel() if mod.bias is not None else 0
        rows.append({"layer": names[mod], "type": type(mod).__name__, "params": w.numel() + bias,
                     "nonzero_params": nz + bias, "macs": macs,
                     "nonzero_macs": int(round(macs * density))})

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    try:
        p = next(model.parameters())
        model.eval()(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    total_params = sum(p.numel() for p in model.parameters())
    zeros = sum(r["params"] - r["nonzero_params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    nz_macs = sum(r["nonzero_macs"] for r in rows)
    return {"params": total_params, "nonzero_params": total_params - zeros, "macs": macs,
            "nonzero_macs": nz_macs, "flops": 2 * macs, "nonzero_flops": 2 * nz_macs,
            "dense": 2 * macs, "nonzero": 2 * nz_macs, "layers": rows,
            "input_shape": list(input_shape)}
