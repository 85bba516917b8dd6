"""Data-parallel training under ``torchrun``: one process per device, NCCL on GPUs, gloo on CPUs.

Every rank builds the same models from the same seeds and walks the same global batches; each
computes on its contiguous share of a batch (``DeviceLoader.set_shard``). The loss on a share
is Σ CE · world / B_global, so averaging gradients over ranks (what DDP does) gives exactly the
gradient of the mean over the whole global batch, uneven last batches included — the same
update as single-process training. A final batch with fewer images than ranks leaves the last
ranks an empty share: they still step (a zero gradient into the all-reduce, the same optimizer
update as every rank) but keep their normalization statistics (:func:`keep_norm_stats`), so
the batch is trained as in single-process training instead of being dropped. Only rank 0
writes checkpoints, metrics and progress.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    owns_group: bool = False  # this module started the process group and ends it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (a no-op without one).

    On CUDA each process takes ``cuda:$LOCAL_RANK``; on CPU all share the host with gloo."""
    world = dist.get_world_size() if dist.is_initialized() else env_world_size()
    if world <= 1:
        return DistInfo(device=device)
    owns = False
    if torch.device(device).type == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t)
    return t


def average_gradients(params: list[torch.Tensor], info: DistInfo) -> None:
    """Mean of every gradient over ranks in one flat all-reduce (the batched K-model path,
    whose stacked parameters do not live in a module DDP could wrap)."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(info.world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@contextlib.contextmanager
def keep_norm_stats(models: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Restore every normalization buffer (BatchNorm running mean/var and batch count) after a
    step on an empty share: the forward of no images must not count as a batch (with
    ``momentum=None`` the count weights the cumulative average) nor move the statistics."""
    saved = [(b, b.detach().clone()) for m in models for _, b in m.named_buffers()
             if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in saved:
                b.copy_(old)
