"""The built-in dataset components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightlab.components import Dataset
from weightlab.errors import DataError
from weightlab.params import param

if TYPE_CHECKING:  # numpy and torch load with the data, not when datasets are listed
    import numpy as np

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _torch(x: np.ndarray, y: np.ndarray):
    import numpy as np
    import torch

    # a writable C-contiguous copy only when needed (IDX data comes from read-only buffers)
    x, y = (np.require(a, requirements=["C", "W"]) for a in (x, y))
    return torch.from_numpy(x), torch.from_numpy(y)


def _download(torchvision_name: str, data_dir) -> None:
    """Fetch both splits with torchvision into ``data_dir`` (only with --download)."""
    import torchvision

    cls = getattr(torchvision.datasets, torchvision_name)
    for train in (True, False):
        cls(root=str(data_dir), train=train, download=True)


class MNIST(Dataset):
    """MNIST handwritten digits (LeCun et al.), 60k/10k 28×28 grayscale.

    Layout: ``<data-dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""

    name = "mnist"
    summary = "MNIST digits, 28×28 grayscale, from <data-dir>/MNIST/raw"
    num_classes = 10
    input_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)
    folder = "MNIST"  # the raw-file folder, also the torchvision class that downloads it
    layout = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"

    def load(self, data_dir, split, download=False):
        from weightlab.data.readers import read_mnist_layout

        root = Path(data_dir)
        if download:
            _download(self.folder, root)
        return _torch(*read_mnist_layout(root, self.folder, split, self.name))


class FashionMNIST(MNIST):
    """Fashion-MNIST (Xiao et al. 2017): 10 clothing classes, 28×28 grayscale.

    Layout: ``<data-dir>/FashionMNIST/raw/…-ubyte[.gz]`` (torchvision's)."""

    name = "fashion-mnist"
    summary = "Fashion-MNIST, 28×28 grayscale, from <data-dir>/FashionMNIST/raw"
    mean, std = (0.2860,), (0.3530,)
    folder = "FashionMNIST"
    layout = "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"

    @dataclass
    class Params:
        # the Vanishing Feature code normalizes Fashion-MNIST with MNIST's mean and std
        normalization: str = param("own", "input mean/std: own (Fashion-MNIST's) or mnist "
                                          "(the seed code's)", choices=("own", "mnist"))

    def __init__(self, params=None, **values):
        super().__init__(params, **values)
        if self.params.normalization == "mnist":
            self.mean, self.std = MNIST.mean, MNIST.std

    def class_names(self):
        return ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                "Sneaker", "Bag", "Ankle boot"]


class CIFAR10(Dataset):
    """CIFAR-10 (Krizhevsky 2009): 50k/10k 32×32 colour images in 10 classes; training
    augmentation is a random 32-crop of the 4-pixel zero-padded image and a horizontal flip.

    Layout: ``<data-dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}``."""

    name = "cifar10"
    summary = "CIFAR-10, 32×32 colour, from <data-dir>/cifar-10-batches-py"
    num_classes = 10
    input_shape = (3, 32, 32)
    mean, std = CIFAR_MEAN, CIFAR_STD
    augment = "crop_flip"
    layout = "cifar-10-batches-py/{data_batch_1..5,test_batch}"

    def load(self, data_dir, split, download=False):
        from weightlab.data.readers import read_cifar10

        if download:
            _download("CIFAR10", data_dir)
        return _torch(*read_cifar10(Path(data_dir), split))

    def class_names(self):
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"]


class CIFAR100(Dataset):
    """CIFAR-100 (Krizhevsky 2009): 50k/10k 32×32 colour images, 100 fine classes.

    Layout: ``<data-dir>/cifar-100-python/{train,test}``."""

    name = "cifar100"
    summary = "CIFAR-100, 32×32 colour, from <data-dir>/cifar-100-python"
    num_classes = 100
    input_shape = (3, 32, 32)
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    augment = "crop_flip"
    layout = "cifar-100-python/{train,test}"

    @dataclass
    class Params:
        # The Vanishing Feature code normalizes CIFAR-100 with CIFAR-10's mean and std
        # (source/utils/data_funcs.py); its CIFAR-100 checkpoints need normalization=cifar10.
        normalization: str = param("own", "input mean/std: own (CIFAR-100's) or cifar10 (the "
                                          "seed code's)", choices=("own", "cifar10"))

    def __init__(self, params=None, **values):
        super().__init__(params, **values)
        if self.params.normalization == "cifar10":
            self.mean, self.std = CIFAR_MEAN, CIFAR_STD

    def load(self, data_dir, split, download=False):
        from weightlab.data.readers import read_cifar100

        if download:
            _download("CIFAR100", data_dir)
        return _torch(*read_cifar100(Path(data_dir), split))


class ImageNet(Dataset):
    """ImageNet-1k from an ImageFolder tree ``<data-dir>/imagenet/{train,val}/<class>/*.JPEG``
    (or a subset of its classes: the number of classes follows the class folders).

    Too large for device memory: batches stream from disk through worker processes. Training
    batches get the standard augmentation (RandomResizedCrop 224 with scale (0.08, 1), random
    horizontal flip); evaluation and calibration batches are resized to 256 and centre-cropped
    to 224."""

    name = "imagenet"
    summary = "ImageNet from an ImageFolder tree <data-dir>/imagenet/{train,val}"
    num_classes = 1000
    input_shape = (3, 224, 224)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    augment = "random_resized_crop"
    layout = "imagenet/{train,val}/<class>/<image>"
    streaming = True

    def load(self, data_dir, split, download=False):
        from torchvision.datasets import ImageFolder

        folder = Path(data_dir) / "imagenet" / ("train" if split == "train" else "val")
        if not folder.is_dir():
            raise DataError(f"imagenet: {folder} not found; expected the layout "
                            f"<data-dir>/{self.layout}")
        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"imagenet: {folder}: {e}") from None
        known = getattr(self, "_classes", None)
        if known is not None and list(ds.classes) != known:
            raise DataError(f"imagenet: the class folders of {folder} differ from the training "
                            f"split's ({len(ds.classes)} vs {len(known)} classes)")
        # subsets (ImageNette, ImageNet-100) work too: the head follows the folders
        self._classes, self.num_classes = list(ds.classes), len(ds.classes)
        return ds

    def transform(self, train):
        import torchvision.transforms as T

        size = self.input_shape[-1]
        if train:
            return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                              T.PILToTensor()])
        return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size),
                          T.PILToTensor()])

    def class_names(self):
        return getattr(self, "_classes", None) or super().class_names()


class Digits(Dataset):
    """scikit-learn's 8×8 handwritten digits (1,797 images): ships with the package, so it
    needs no data directory. A fixed seeded split keeps 1,437 for training and 360 for test."""

    name = "digits"
    summary = "scikit-learn 8×8 digits, built in: no download, no data directory"
    num_classes = 10
    input_shape = (1, 8, 8)
    mean, std = (0.3050,), (0.3768,)
    needs_data_dir = False
    n_test = 360

    def load(self, data_dir, split, download=False):
        import numpy as np

        images, target = digits_arrays()
        # 0..16 intensities → uint8 0..255, so every dataset is stored the same way.
        x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        order = np.random.default_rng(0).permutation(len(x))
        idx = order[self.n_test:] if split == "train" else order[:self.n_test]
        return _torch(x[idx], target[idx].astype(np.int64))


def digits_arrays():
    """scikit-learn's digits as ``(images (1797, 8, 8) float64, target (1797,) int)``, the
    arrays ``sklearn.datasets.load_digits()`` returns, read from the CSV the package ships
    (64 pixel columns and the label per row) without importing ``sklearn.datasets`` (0.9 s of
    imports per process: every run, test and executor worker on digits paid it). Falls back to
    ``load_digits`` if a scikit-learn release moves the file."""
    import gzip
    import importlib.util
    from pathlib import Path

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    csv = next((Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots
                if (Path(r) / "datasets" / "data" / "digits.csv.gz").is_file()), None)
    if csv is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


class Synthetic(Dataset):
    """Random class-prototype images plus noise, for smoke tests only (learnable, not
    meaningful). Shape and size are parameters."""

    name = "synthetic"
    summary = "random prototype+noise images for smoke tests (not a benchmark)"
    needs_data_dir = False

    @dataclass
    class Params:
        n_train: int = param(512, "training images", min=1)
        n_test: int = param(256, "test images", min=1)
        classes: int = param(10, "number of classes", min=2)
        channels: int = param(3, "image channels", min=1)
        size: int = param(32, "image height and width", min=4)
        seed: int = param(0, "generator seed")

    def __init__(self, params=None, **values):
        super().__init__(params, **values)
        p = self.params
        self.num_classes = p.classes
        self.input_shape = (p.channels, p.size, p.size)
        self.mean = (0.5,) * p.channels
        self.std = (0.25,) * p.channels

    def load(self, data_dir, split, download=False):
        import numpy as np

        p = self.params
        rng = np.random.default_rng(p.seed)
        protos = rng.uniform(0, 255, size=(p.classes, *self.input_shape))
        n = p.n_train if split == "train" else p.n_test
        rng = np.random.default_rng(p.seed + (1 if split == "train" else 2))
        y = rng.integers(0, p.classes, size=n)
        x = protos[y] * 0.6 + rng.uniform(0, 255, size=(n, *self.input_shape)) * 0.4
        return _torch(x.astype(np.uint8), y.astype(np.int64))


DATASETS = [MNIST, FashionMNIST, CIFAR10, CIFAR100, ImageNet, Digits, Synthetic]
