"""ImageNet-style streaming data: an ImageFolder tree read through worker processes, training
augmentation (RandomResizedCrop + flip) vs evaluation resize/centre-crop, seeded epochs, and
the data-parallel split of every global batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from weightlab.data.bundle import load_data
from weightlab.data.loaders import shard_bounds
from weightlab.errors import DataError

CLASSES = ("n01", "n02", "n03")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes × 5 JPEGs of assorted sizes in train/ and 2 in val/."""
    root = tmp_path_factory.mktemp("inet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("val", 2)):
        for c in CLASSES:
            d = root / "imagenet" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(240, 320, size=2)
                arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.JPEG", quality=90)
    return root


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_classes_follow_the_folders_and_eval_batches_are_centre_crops(tree):
    b = load_data("imagenet", data_dir=tree)
    assert b.num_classes == 3 and b.dataset.class_names() == list(CLASSES)
    x, y = next(iter(b.loader("test", batch_size=6)))
    assert x.shape == (6, 3, 224, 224) and y.tolist() == [0, 0, 1, 1, 2, 2]
    # resize the short side to 256, centre-crop 224, normalize: by hand for the first image
    import torchvision.transforms.functional as TF

    img = Image.open(tree / "imagenet" / "val" / "n01" / "0.JPEG").convert("RGB")
    ref = TF.pil_to_tensor(TF.center_crop(TF.resize(img, 256), 224)).float() / 255
    mean = torch.tensor(b.dataset.mean)[:, None, None]
    std = torch.tensor(b.dataset.std)[:, None, None]
    assert torch.allclose(x[0], (ref - mean) / std, atol=1e-5)
    assert torch.equal(batches(b.loader("test", batch_size=6))[0][0], x)  # deterministic


def test_training_batches_are_augmented_and_seeded_per_epoch(tree):
    b = load_data("imagenet", data_dir=tree)
    ld = b.loader("train", batch_size=4, shuffle=True, augment=True, seed=3)
    assert len(ld) == 4  # 15 images
    first = batches(ld)
    again = batches(ld)
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(first, again))
    ld.set_epoch(1)
    other = batches(ld)
    assert not all(torch.equal(a[1], c[1]) for a, c in zip(first, other))
    # augmentation: the same image order without augmentation gives other pixels
    plain = batches(b.loader("train", batch_size=4, shuffle=True, augment=False, seed=3))
    assert all(torch.equal(a[1], c[1]) for a, c in zip(first, plain))
    assert not torch.allclose(first[0][0], plain[0][0])


def test_ranks_split_every_global_batch_like_a_single_process(tree):
    b = load_data("imagenet", data_dir=tree)
    whole = batches(b.loader("train", batch_size=7, shuffle=True, seed=1))
    parts = []
    for rank in range(2):
        ld = b.loader("train", batch_size=7, shuffle=True, seed=1)
        ld.set_shard(rank, 2)
        parts.append(batches(ld))
    # 15 images in batches of 7: the final one-image batch goes to rank 0 whole, rank 1 gets
    # an empty share of the same image shape (it steps without statistics)
    assert len(whole) == 3 and [len(p) for p in parts] == [3, 3]
    assert parts[1][2][0].shape == (0, *whole[2][0].shape[1:]) and len(parts[1][2][1]) == 0
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][i][1], parts[1][i][1]]), y)
        assert torch.allclose(torch.cat([parts[0][i][0], parts[1][i][0]]), x)


def test_shard_bounds_are_even_and_cover_the_batch():
    for n in range(1, 20):
        for world in (1, 2, 3, 4, 8):
            spans = [shard_bounds(10, 10 + n, r, world) for r in range(world)]
            sizes = [hi - lo for lo, hi in spans]
            assert spans[0][0] == 10 and spans[-1][1] == 10 + n
            assert all(spans[r][1] == spans[r + 1][0] for r in range(world - 1))
            assert max(sizes) - min(sizes) <= 1


def test_mismatched_val_classes_are_one_line(tmp_path, tree):
    import shutil

    shutil.copytree(tree / "imagenet" / "train", tmp_path / "imagenet" / "train")
    (tmp_path / "imagenet" / "val" / "n09").mkdir(parents=True)
    shutil.copy(tree / "imagenet" / "val" / "n01" / "0.JPEG", tmp_path / "imagenet" / "val" / "n09")
    with pytest.raises(DataError, match="differ from the training split"):
        load_data("imagenet", data_dir=tmp_path)
