"""Evaluation: loss, top-1 and top-5 over a loader, accumulated on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, max_batches: int | None = None) -> dict:
    was_training = model.training
    model.eval()
    dev = next(iter(model.parameters())).device
    loss = torch.zeros((), device=dev, dtype=torch.float64)
    top1 = torch.zeros((), device=dev, dtype=torch.long)
    top5 = torch.zeros((), device=dev, dtype=torch.long)
    n = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        logits = model(x.to(dev)).float()
        y = y.to(dev)
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        top1 += (topk[:, 0] == y).sum()
        top5 += (topk == y[:, None]).any(1).sum()
        n += len(y)
    model.train(was_training)
    n = max(n, 1)
    return {"loss": float(loss) / n, "top1": float(top1) / n, "top5": float(top5) / n,
            "samples": n}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    dev = next(iter(model.parameters())).device
    outs, ys = [], []
    for x, y in loader:
        outs.append(model(x.to(dev)).float())
        ys.append(y.to(dev))
    return torch.cat(outs), torch.cat(ys)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return {"loss": float(F.cross_entropy(logits, labels)),
            "top1": float((topk[:, 0] == labels).float().mean()),
            "top5": float((topk == labels[:, None]).any(1).float().mean()),
            "samples": len(labels)}
