"""Load a dataset by name into a :class:`DataBundle`: train/test tensors, a seeded held-out
split of the training set, and loaders for every use (training, evaluation, calibration)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weightlab.data.loaders import DeviceLoader, StreamingLoader
from weightlab.errors import DataError

DATA_ENV = "WEIGHTLAB_DATA"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, "data"))


@dataclass
class DataBundle:
    name: str
    dataset: Any  # the Dataset component
    train: Any  # (images, labels) or a map-style dataset
    test: Any
    heldout_idx: torch.Tensor
    train_idx: torch.Tensor
    device: torch.device

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.input_shape)

    def describe(self) -> dict:
        d = self.dataset
        return {"name": self.name, "params": d.params_dict(), "num_classes": d.num_classes,
                "input_shape": list(d.input_shape), "mean": list(d.mean), "std": list(d.std),
                "classes": d.class_names()}

    def loader(self, split: str = "train", *, batch_size: int = 500, shuffle: bool = False,
               augment: bool = False, seed: int = 0, num_samples: int | None = None,
               drop_last: bool = False):
        """``split``: train (minus held-out), heldout, test, or calibration (= train without
        augmentation, first ``num_samples`` of a seeded order)."""
        d = self.dataset
        if split == "test":
            src, idx = self.test, None
        elif split == "heldout":
            if len(self.heldout_idx) == 0:
                raise DataError(f"{self.name}: no held-out split (set heldout=N > 0)")
            src, idx = self.train, self.heldout_idx
        elif split in ("train", "calibration"):
            src, idx = self.train, self.train_idx
        else:
            raise ValueError(split)
        if split == "calibration" and num_samples is not None:
            perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))
            idx = idx[perm[:num_samples]]
        elif num_samples is not None:
            idx = (idx if idx is not None else torch.arange(_len(src)))[:num_samples]
        if getattr(d, "streaming", False):
            return StreamingLoader(src, batch_size=batch_size, mean=d.mean, std=d.std,
                                   device=self.device, shuffle=shuffle, seed=seed,
                                   indices=None if idx is None else idx.tolist(),
                                   transform=d.transform(train=augment), drop_last=drop_last)
        images, labels = src
        if idx is not None:
            images, labels = images[idx], labels[idx]
        return DeviceLoader(images, labels, batch_size=batch_size, mean=d.mean, std=d.std,
                            device=self.device, shuffle=shuffle,
                            augment=d.augment if augment else None, seed=seed,
                            drop_last=drop_last)


def _len(src) -> int:
    return len(src[1]) if isinstance(src, tuple) else len(src)


def check_data(name: str, *, data_dir: str | Path | None = None, download: bool = False,
               params: dict[str, Any] | None = None, registry=None) -> tuple[Any, Path]:
    """The dataset component and its root, checked without reading any image: the name and
    parameters are known, the data directory exists (unless downloading). What a caller that
    hands the loading to other processes (a fanned-out training) checks first."""
    from weightlab import plugins

    reg = registry or plugins.registry()
    ds = reg.create("datasets", name, params)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if ds.needs_data_dir and not download and not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"{ds.name}: data directory {root} {what}; expected "
                        f"{root}/{ds.layout} (pass --data-dir or set {DATA_ENV})")
    return ds, root


def load_data(name: str, *, data_dir: str | Path | None = None, device: str = "cpu",
              heldout: int = 0, seed: int = 0, download: bool = False,
              params: dict[str, Any] | None = None, registry=None) -> DataBundle:
    ds, root = check_data(name, data_dir=data_dir, download=download, params=params,
                          registry=registry)
    train = ds.load(root, "train", download)
    test = ds.load(root, "test", False)
    n = _len(train)
    if heldout < 0 or heldout >= n:
        raise DataError(f"{ds.name}: heldout={heldout} must be in [0, {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))
    heldout_idx, train_idx = perm[:heldout].sort().values, perm[heldout:].sort().values
    return DataBundle(ds.name, ds, train, test, heldout_idx, train_idx, torch.device(device))
