"""Parameter and multiply-accumulate counts of conv and linear layers, dense and non-zero.

A conv's MACs per image = H_out·W_out·C_out·(C_in/groups)·k_h·k_w; a linear's = in·out.
``nn.MultiheadAttention`` with L queries and S keys/values of E channels: its projections
L·E·E (Q) + S·E_k·E (K) + S·E_v·E (V) and L·E·E (output), and its two matrix products
Q·Kᵀ and softmax(·)·V, L·S·E each (H heads of E/H channels). Softmax, norms and activations
are not multiply-accumulates (torch's FlopCounterMode does not count them either).
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

    def density(key: str, w: torch.Tensor) -> float:
        m = (masks or {}).get(key)
        return (int(m.sum()) if m is not None else int((w != 0).sum())) / max(w.numel(), 1)

    def attention(mod, args, kwargs, out):
        given = list(args) + [kwargs[n] for n in ("query", "key", "value")[len(args):]]
        q, k, v = given[:3]
        # tokens of one image (the count runs a batch of one): (1, L, E), (L, 1, E) or (L, E)
        lq, ls, e = q.numel() // q.shape[-1], k.numel() // k.shape[-1], mod.embed_dim
        name = names[mod]
        parts = [("in_proj", lq * e * e + ls * k.shape[-1] * e + ls * v.shape[-1] * e),
                 ("attention", 2 * lq * ls * e), ("out_proj", lq * e * e)]
        for part, macs in parts:
            if part == "attention":
                rows.append({"layer": f"{name}.{part}", "type": "QKᵀ, AV", "params": 0,
                             "nonzero_params": 0, "macs": macs, "nonzero_macs": macs})
                continue
            tensors = ([(f"{name}.in_proj_weight", mod.in_proj_weight)]
                       if mod._qkv_same_embed_dim else
                       [(f"{name}.{c}_proj_weight", getattr(mod, f"{c}_proj_weight"))
                        for c in "qkv"]) if part == "in_proj" else \
                [(f"{name}.out_proj.weight", mod.out_proj.weight)]
            n = sum(w.numel() for _, w in tensors)
            nz = sum(round(density(key, w) * w.numel()) for key, w in tensors)
            bias = mod.in_proj_bias if part == "in_proj" else mod.out_proj.bias
            nb = bias.numel() if bias is not None else 0
            rows.append({"layer": f"{name}.{part}", "type": "MultiheadAttention",
                         "params": n + nb, "nonzero_params": nz + nb, "macs": macs,
                         "nonzero_macs": int(round(macs * nz / max(n, 1)))})

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [m.register_forward_hook(attention, with_kwargs=True) for m in model.modules()
                if isinstance(m, nn.MultiheadAttention)]
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
