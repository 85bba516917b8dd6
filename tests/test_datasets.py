"""Dataset readers on real data (digits, MNIST, the CIFAR-10 copy), a CIFAR-100 layout written
here, one-line errors for missing data, the device-side crop/flip augmentation against
torchvision's semantics, and the seeded held-out split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from weightlab import testing
from weightlab.data.bundle import load_data
from weightlab.data.loaders import DeviceLoader, crop_flip
from weightlab.errors import DataError


def _normalized_stats(bundle):
    x = torch.cat([xb for xb, _ in bundle.loader("train", batch_size=10_000)])
    dims = (0, 2, 3)
    return x.mean(dims), x.std(dims)


def test_digits_ships_with_the_package():
    b = load_data("digits", data_dir="/nonexistent")  # needs no data directory
    x, y = b.train
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.uint8 and int(x.max()) == 255
    assert b.test[0].shape == (360, 1, 8, 8) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [149, 144, 144, 143, 148, 143, 149, 137, 133, 147]
    mean, std = _normalized_stats(b)  # normalization constants are the data's own
    assert abs(mean.item()) < 0.01 and abs(std.item() - 1) < 0.01


def test_digits_are_scikit_learns_arrays_without_importing_sklearn_datasets():
    """digits_arrays reads the CSV scikit-learn ships; the arrays equal load_digits()'s
    exactly (1,797 images, 8×8, intensities 0..16, labels 0..9), and reading them leaves
    sklearn.datasets unimported (checked in a fresh interpreter)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits
    from weightlab.data.datasets import digits_arrays

    images, target = digits_arrays()
    ref = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, ref.images)
    assert target.dtype == ref.target.dtype and np.array_equal(target, ref.target)
    code = ("import sys; from weightlab.data.datasets import digits_arrays; digits_arrays(); "
            "print('sklearn.datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mnist_from_the_standard_layout():
    b = load_data("mnist", data_dir=testing.shared_data_dir("MNIST"))
    (x, y), (xt, yt) = b.train, b.test
    assert x.shape == (60_000, 1, 28, 28) and xt.shape == (10_000, 1, 28, 28)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y.min() == 0 and y.max() == 9 and yt.min() == 0 and yt.max() == 9
    assert torch.bincount(y)[1] == 6742 and torch.bincount(yt)[0] == 980  # published counts
    mean, std = _normalized_stats(b)  # 0.1307/0.3081 are MNIST's training statistics
    assert abs(mean.item()) < 0.01 and abs(std.item() - 1) < 0.01
    assert b.describe()["classes"] == [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def cifar10():
    return load_data("cifar10", data_dir=testing.cifar10_dir())


def test_cifar10_from_the_pickle_layout(cifar10):
    """Pixel statistics of the first 10,000 training images, measured on the JPEG q75 copy:
    mean (0.4933, 0.4833, 0.4472), std (0.2458, 0.2439, 0.2616) — the published per-pixel
    values are (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616), so the R, G, B planes are
    read in order (R and B differ by 0.045, far more than the 0.01 margin). The SPEC's
    normalization std (0.2023, 0.1994, 0.2010) is the seed code's mean per-image std, smaller
    than the per-pixel std, so normalized data has std ≈ 1.2."""
    b = cifar10
    (x, y), (xt, yt) = b.train, b.test
    assert x.shape == (50_000, 3, 32, 32) and xt.shape == (10_000, 3, 32, 32)
    assert x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [5000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    pixels = x[:10_000].float().div_(255)
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01, rtol=0)
    torch.testing.assert_close(std, torch.tensor([0.2470, 0.2435, 0.2616]), atol=0.01, rtol=0)
    assert b.dataset.mean == (0.4914, 0.4822, 0.4465) and b.dataset.std == (0.2023, 0.1994, 0.2010)
    assert b.dataset.class_names()[0] == "airplane" and b.dataset.augment == "crop_flip"


def _write_cifar100(root, n_train=20, n_test=10):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [0] * n}, f)
        written[split] = (data, fine)
    return written


def test_cifar100_layout_written_here(tmp_path):
    written = _write_cifar100(tmp_path)
    b = load_data("cifar100", data_dir=tmp_path)
    assert b.num_classes == 100 and b.input_shape == (3, 32, 32)
    for split, (x, y) in (("train", b.train), ("test", b.test)):
        data, fine = written[split]
        assert x.shape == (len(fine), 3, 32, 32) and x.dtype == torch.uint8
        assert y.tolist() == fine
        # rows are R, G, B planes of 32×32, row-major
        assert x[3, 1, 5, 7] == data[3, 1024 + 5 * 32 + 7]
        assert torch.equal(x.reshape(len(fine), -1), torch.from_numpy(data))


@pytest.mark.parametrize("name, expected", [
    ("mnist", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    ("fashion-mnist", "FashionMNIST/raw/"),
    ("cifar10", "cifar-10-batches-py/{data_batch_1..5,test_batch}"),
    ("cifar100", "cifar-100-python/"),
])
def test_missing_data_is_one_line_naming_path_and_layout(tmp_path, name, expected):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError) as e:
        load_data(name, data_dir=missing)
    assert str(missing) in str(e.value) and expected in str(e.value)
    with pytest.raises(DataError) as e:  # the directory exists but holds nothing
        load_data(name, data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and expected in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_data_through_the_cli(tmp_path, cli):
    code, out, err = cli("train", "mlp", "--data", "mnist", "--data-dir", tmp_path / "nope",
                         "--out", tmp_path / "run")
    assert code == 1 and out == ""
    assert err.startswith("error: mnist: data directory") and str(tmp_path / "nope") in err
    assert "MNIST/raw" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_damaged_idx_file_is_refused(tmp_path):
    import gzip
    import shutil

    src = testing.shared_data_dir("MNIST") / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, raw / f.name)
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz") as f:
        labels = f.read()
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(labels[:-10])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: truncated IDX file"):
        load_data("mnist", data_dir=tmp_path)


def _candidates(img_u8):
    """All 81 crops × 2 flips of torchvision's RandomCrop(32, padding=4) + horizontal flip."""
    import torchvision.transforms.functional as TF

    padded = TF.pad(img_u8, [4])
    crops = [TF.crop(padded, i, j, 32, 32) for i in range(9) for j in range(9)]
    return torch.stack(crops + [TF.hflip(c) for c in crops])  # index = flip·81 + 9i + j


def test_crop_flip_matches_torchvision_semantics():
    """2,000 crops of one image: every output is one of torchvision's 162 crop/flip results;
    measured: flipped fraction 0.48, each of the 81 offsets seen 12 to 34 times."""
    import torchvision.transforms as T

    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)
    cands = _candidates(img).flatten(1).double()  # (162, 3072)
    assert len(torch.unique(cands, dim=0)) == 162
    torch.manual_seed(0)  # torchvision's own RandomCrop lands in the same candidate set
    tv = torch.stack([T.RandomCrop(32, padding=4)(img) for _ in range(20)]).flatten(1).double()

    out = crop_flip(img.expand(2000, 3, 32, 32).contiguous(), torch.Generator().manual_seed(1))
    assert out.shape == (2000, 3, 32, 32) and out.dtype == torch.uint8
    for batch in (tv, out.flatten(1).double()):
        # squared distance to every candidate, exact in float64 for uint8 images
        dist = (batch**2).sum(1, keepdim=True) + (cands**2).sum(1) - 2 * batch @ cands.T
        hit = dist.min(1)
        assert (hit.values == 0).all()  # every output is one of torchvision's crops/flips
    which = hit.indices
    flips, offsets = which // 81, which % 81
    assert len(torch.unique(offsets)) == 81  # every offset 0..8 × 0..8 occurs
    assert 0.45 < flips.double().mean().item() < 0.55


def test_augmenting_loader_is_seeded_and_keeps_shapes(cifar10):
    b = cifar10
    images, labels = b.train[0][:256], b.train[1][:256]
    kw = dict(batch_size=64, mean=b.dataset.mean, std=b.dataset.std, shuffle=True)

    def first(seed, epoch=0, augment="crop_flip"):
        ld = DeviceLoader(images, labels, seed=seed, augment=augment, **kw)
        ld.set_epoch(epoch)
        return next(iter(ld))

    x0, y0 = first(0)
    assert x0.shape == (64, 3, 32, 32) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    x1, y1 = first(0)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)  # same seed, same batch
    x2, _ = first(0, epoch=1)
    x3, _ = first(1)
    assert not torch.equal(x0, x2) and not torch.equal(x0, x3)
    plain, yp = first(0, augment=None)
    assert torch.equal(yp, y0) and not torch.equal(plain, x0)  # same order, pixels moved
    # the loader's own ``augment`` flag follows the dataset: CIFAR augments, MNIST does not
    assert b.loader("train", augment=True).augment == "crop_flip"
    assert b.loader("test").augment is None


def test_heldout_split_is_seeded_and_disjoint_from_train():
    a = load_data("digits", heldout=200)
    again = load_data("digits", heldout=200)
    other = load_data("digits", heldout=200, seed=1)
    assert len(a.heldout_idx) == 200 and len(a.train_idx) == 1237
    assert torch.equal(a.heldout_idx, again.heldout_idx)
    assert not torch.equal(a.heldout_idx, other.heldout_idx)
    assert not set(a.heldout_idx.tolist()) & set(a.train_idx.tolist())
    assert sorted(a.heldout_idx.tolist() + a.train_idx.tolist()) == list(range(1437))
    held = torch.cat([y for _, y in a.loader("heldout", batch_size=64)])
    assert torch.equal(held, a.train[1][a.heldout_idx])
    train_n = sum(len(y) for _, y in a.loader("train", batch_size=100, shuffle=True))
    assert train_n == 1237  # the training loader never sees held-out images
    cal = [torch.cat([y for _, y in a.loader("calibration", num_samples=300, seed=s)])
           for s in (0, 0, 1)]
    assert len(cal[0]) == 300 and torch.equal(cal[0], cal[1]) and not torch.equal(cal[0], cal[2])
    with pytest.raises(DataError, match="no held-out split"):
        load_data("digits").loader("heldout")
    with pytest.raises(DataError, match=r"heldout=1437 must be in \[0, 1437\)"):
        load_data("digits", heldout=1437)


def test_cifar100_with_the_seed_codes_cifar10_normalization(tmp_path, cli):
    """The seed normalizes CIFAR-100 with CIFAR-10's mean/std. normalization=cifar10 gives
    exactly those inputs (x̂ = (x/255 − μ₁₀)/σ₁₀, re-stated here), is stored in an imported
    checkpoint and comes back when the checkpoint is evaluated (before: CIFAR-100's own
    statistics always)."""
    from weightlab.ops.common import load_bundle

    _write_cifar100(tmp_path)
    own = load_data("cifar100", data_dir=tmp_path)
    seed = load_data("cifar100", data_dir=tmp_path, params={"normalization": "cifar10"})
    mu = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    sd = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)  # the seed's (data_funcs.py)
    x_seed, _ = next(iter(seed.loader("test", batch_size=10)))
    x_own, _ = next(iter(own.loader("test", batch_size=10)))
    want = (seed.test[0].float() / 255 - mu) / sd
    assert torch.allclose(x_seed, want, atol=1e-4) and not torch.allclose(x_own, want, atol=1e-2)

    src = tmp_path / "model_1_160.pt"
    torch.save(testing.tiny_model("cifar_resnet8", input_shape=(3, 32, 32),
                                  num_classes=100).state_dict(), src)
    code, _, err = cli("import", src, "--model", "cifar_resnet8", "--data", "cifar100",
                       "--data-param", "normalization=cifar10", "--out", tmp_path / "m.safetensors")
    assert code == 0, err
    from weightlab import checkpoint as ckpt_io

    ck = ckpt_io.load(tmp_path / "m.safetensors")
    assert ck.data["params"] == {"normalization": "cifar10"}
    assert ck.data["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert load_bundle(ck, None, tmp_path, "cpu").dataset.mean == seed.dataset.mean
