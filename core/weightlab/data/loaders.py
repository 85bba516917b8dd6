"""Batches from uint8 tensors that live on the device; augmentation runs per batch there.

Each epoch's order comes from a generator seeded with (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch


def crop_flip(x_u8: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded image back to its size, then a random horizontal flip
    (torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip), vectorized."""
    b = x_u8.shape[0]
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=gen, device=gen.device)
    flip = torch.rand(b, generator=gen, device=gen.device) < 0.5
    dev = x_u8.device
    return crop_flip_at(x_u8, offsets[0].to(dev), offsets[1].to(dev), flip.to(dev), pad)


def crop_flip_at(x_u8: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                 pad: int = 4) -> torch.Tensor:
    """Crop rows ``oy[i]:oy[i]+h`` and columns ``ox[i]:ox[i]+w`` of each zero-padded image,
    mirrored where ``flip[i]``: one gather through broadcast (b, c, h, w) indices."""
    b, c, h, w = x_u8.shape
    dev = x_u8.device
    padded = torch.nn.functional.pad(x_u8, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=dev)                       # (b, h)
    cols = ox[:, None] + torch.arange(w, device=dev)                       # (b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class _Epochs:
    """Epoch bookkeeping both loaders share: batches per epoch, the epoch (and the batch it
    starts from) and this rank's share of every global batch."""

    batch_size: int
    drop_last: bool = False
    epoch, start = 0, 0
    rank, world = 0, 1

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last, self.world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration walks epoch ``epoch`` from its batch ``start`` (a resumed run
        continues inside an epoch with exactly the batches it would have seen)."""
        self.epoch, self.start = epoch, start

    def set_shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world


class DeviceLoader(_Epochs):
    """Iterate ``(x, y)`` float-normalized batches from uint8 images held on ``device``.

    An epoch's randomness (order, crop offsets, flips) is drawn at once on the CPU from a
    generator seeded with (seed, epoch) and moved to the device in one copy, so the batches
    are the same on every device and iterating never waits on the device (no per-step host
    synchronization). ``set_shard(rank, world)`` makes the loader yield only this rank's
    contiguous part of every global batch (data-parallel training), with the very same
    pixels single-process training would see at those positions.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu",
                 shuffle: bool = False, augment: str | None = None, seed: int = 0,
                 drop_last: bool = False):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        c = images.shape[1]
        self.mean = torch.tensor(list(mean) * (c // len(mean)), device=self.device).view(1, c, 1, 1)
        self.std = torch.tensor(list(std) * (c // len(std)), device=self.device).view(1, c, 1, 1)
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def _generator(self) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def normalize(self, x_u8: torch.Tensor) -> torch.Tensor:
        # (x/255 − mean)/std as one multiply-add: x·(1/(255·std)) − mean/std
        scale = 1.0 / (255.0 * self.std)
        return torch.addcmul(-self.mean / self.std, x_u8.float(), scale)

    def epoch_plan(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """This epoch's sample order (None: in storage order) and per-position augmentation
        draws (rows: crop-row offset, crop-column offset, flip), both on the device."""
        gen = self._generator()
        n = self.num_samples
        order = torch.randperm(n, generator=gen) if self.shuffle else None
        aug = None
        if self.augment == "crop_flip":
            offsets = torch.randint(0, 9, (2, n), generator=gen)
            flips = (torch.rand(n, generator=gen) < 0.5).long()[None]
            aug = torch.cat([offsets, flips]).to(self.device, non_blocking=True)
        if order is not None:
            order = order.to(self.device, non_blocking=True)
        return order, aug

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, aug = self.epoch_plan()
        n, b = self.num_samples, self.batch_size
        for i in range(self.start, len(self)):
            lo, hi = i * b, min(n, (i + 1) * b)
            lo, hi = shard_bounds(lo, hi, self.rank, self.world)
            if order is not None:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            else:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            if aug is not None:
                a = aug[:, lo:hi]
                x = crop_flip_at(x, a[0], a[1], a[2].bool())
            yield self.normalize(x), y


class _Transformed(torch.utils.data.Dataset):
    """``base[indices[i]]`` with its image passed through ``transform``."""

    def __init__(self, base, indices, transform):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i):
        img, label = self.base[self.indices[i] if self.indices is not None else i]
        return (self.transform(img) if self.transform is not None else img), label


class StreamingLoader(_Epochs):
    """The same interface over a map-style dataset read from disk (ImageNet).

    Worker processes decode and transform the images; the epoch's order and the workers'
    random seeds come from a generator seeded with (seed, epoch), so a resumed run sees the
    same batches (with the same number of workers). ``set_shard`` splits every global batch
    between ranks as :class:`DeviceLoader` does.
    """

    def __init__(self, dataset, *, batch_size: int, mean, std, device="cpu", shuffle=False,
                 seed: int = 0, workers: int = 4, indices=None, transform=None,
                 drop_last: bool = False):
        self.dataset = _Transformed(dataset, indices, transform)
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.seed, self.workers = batch_size, shuffle, seed, workers
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.drop_last = drop_last

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def batches(self, gen: torch.Generator) -> list[list[int]]:
        """This rank's sample indices of every batch of the epoch."""
        n, b = self.num_samples, self.batch_size
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        out = []
        for i in range(len(self)):
            lo, hi = shard_bounds(i * b, min(n, (i + 1) * b), self.rank, self.world)
            out.append(order[lo:hi].tolist())
        return out

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        # no more workers than cores; pinned memory only helps copies to a GPU
        # the order is the same after a mid-epoch resume; workers' augmentation draws are not
        # (a batch goes to another worker), the one difference from an uninterrupted run
        plan = self.batches(gen)[self.start:]
        # a DataLoader cannot yield an empty batch: this rank's empty share of a final batch
        # smaller than the world is made here, of the images' shape
        dl = torch.utils.data.DataLoader(self.dataset,
                                         batch_sampler=[b for b in plan if b],
                                         generator=gen,
                                         num_workers=min(self.workers, os.cpu_count() or 1),
                                         pin_memory=self.device.type == "cuda")
        scale = 1.0 / (255.0 * self.std)
        loaded = iter(dl)
        for idx in plan:
            if not idx:
                shape = self.dataset[0][0].shape
                yield (torch.empty(0, *shape, device=self.device),
                       torch.empty(0, dtype=torch.long, device=self.device))
                continue
            x, y = next(loaded)
            x = x.to(self.device, non_blocking=True)
            yield torch.addcmul(-self.mean / self.std, x.float(), scale), y.to(self.device)


def num_batches(n: int, batch: int, drop_last: bool, world: int = 1) -> int:
    """Batches per epoch, the same for every ``world``: under data parallelism a final batch
    with fewer samples than ranks is still taken — the ranks past its end get an empty share
    and step without statistics (see :func:`weightlab.training.distributed.keep_norm_stats`),
    so the epoch is the one single-process training walks."""
    full, tail = divmod(n, batch)
    return full + (tail > 0 and not drop_last)


def shard_bounds(lo: int, hi: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share of positions [lo, hi) of a global batch: sizes differ by
    at most one (the first ``(hi − lo) mod world`` ranks take one more), so no rank is left
    empty while the batch holds at least ``world`` samples."""
    if world == 1:
        return lo, hi
    q, r = divmod(hi - lo, world)
    start = lo + rank * q + min(rank, r)
    return start, start + q + (rank < r)
