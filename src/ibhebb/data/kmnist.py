"""Kuzushiji-MNIST (KMNIST) in its official NumPy format.

Expected in ``<root>/kmnist/``: ``kmnist-train-imgs.npz``,
``kmnist-train-labels.npz``, ``kmnist-test-imgs.npz`` and
``kmnist-test-labels.npz``, each holding one array under ``arr_0``
(images uint8 ``(n, 28, 28)``, labels uint8 ``(n,)``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ibhebb.errors import DataError

from .dataset import Dataset, images_to_tensor, labels_to_tensor
from .download import download
from .idx_folder import MEAN, STD

NAME = "kmnist"
BASE_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist"
TRAIN_IMAGES = "kmnist-train-imgs.npz"
TRAIN_LABELS = "kmnist-train-labels.npz"
TEST_IMAGES = "kmnist-test-imgs.npz"
TEST_LABELS = "kmnist-test-labels.npz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
FIX = f"delete it and run `ibhebb data fetch {NAME}`"


def folder(root: Path) -> Path:
    """The KMNIST folder inside the data root."""
    return root / NAME


def read_npz(path: Path) -> np.ndarray:
    """Return the ``arr_0`` array of an ``.npz`` file (pickles refused).

    Raises
    ------
    DataError
        If the file is missing, not a valid npz, or lacks ``arr_0``.
    """
    if not path.is_file():
        raise DataError(f"KMNIST file {path} is missing: run `ibhebb data fetch {NAME}`")
    try:
        with open(path, "rb") as f:
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an npz archive")
            with npz:
                return npz["arr_0"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"KMNIST file {path} is corrupt ({type(exc).__name__}): {FIX}") from None


def _split(where: Path, images_file: str, labels_file: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_npz(where / images_file), read_npz(where / labels_file)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"KMNIST file {where / images_file} holds {images.dtype} {images.shape}, expected uint8 (n, 28, 28): {FIX}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"KMNIST file {where / labels_file} holds {labels.dtype} {labels.shape} for {images.shape[0]} images: {FIX}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"KMNIST file {where / labels_file} has labels outside 0..9: {FIX}")
    return images, labels


def load(root: Path, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Load KMNIST as images ``(n, 1, 28, 28)`` scaled to [-1, 1].

    Raises
    ------
    DataError
        If files are missing or corrupt.
    """
    where = folder(root)
    if not any((where / f).is_file() for f in FILES):
        raise DataError(f"KMNIST not found in {where}: run `ibhebb data fetch {NAME}`")
    x_train, y_train = _split(where, TRAIN_IMAGES, TRAIN_LABELS)
    x_test, y_test = _split(where, TEST_IMAGES, TEST_LABELS)
    return Dataset(
        name=NAME,
        x_train=images_to_tensor(x_train[:n_train, None], MEAN, STD),
        y_train=labels_to_tensor(y_train[:n_train]),
        x_test=images_to_tensor(x_test[:n_test, None], MEAN, STD),
        y_test=labels_to_tensor(y_test[:n_test]),
        n_classes=10,
    )


def fetch(root: Path, progress: bool = True) -> Path:
    """Download the four KMNIST files into ``<root>/kmnist/`` (those not already there).

    Raises
    ------
    DataError
        If a download fails.
    """
    where = folder(root)
    manual = f"download the four files from {BASE_URL}/ by hand into {where}"
    for name in FILES:
        if not (where / name).is_file():
            download(f"{BASE_URL}/{name}", where / name, manual=manual, progress=progress)
    load(root, n_train=1, n_test=1)  # validates every file
    return where
