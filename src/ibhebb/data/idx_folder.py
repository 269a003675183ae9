"""Loading a folder of the four MNIST-style IDX files into a :class:`Dataset`.

MNIST and Fashion-MNIST share the layout: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each plain or gzip-compressed (``.gz``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ibhebb.errors import DataError

from .checksum import Stamp, check_md5, md5_bytes
from .dataset import Dataset, images_to_tensor, labels_to_tensor
from .idx import find_idx, parse_idx, read_idx_bytes

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
#: The four file names, without a ``.gz`` suffix.
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Grey-level normalisation: ``(x / 255 - 0.5) / 0.5``, i.e. values in [-1, 1].
MEAN = (0.5,)
STD = (0.5,)


def find_files(folder: Path) -> dict[str, Path | None]:
    """Map each of the four file names to its path in ``folder`` (plain or ``.gz``) or ``None``."""
    return {name: find_idx(folder, name) for name in FILES}


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds all four files."""
    return all(p is not None for p in find_files(folder).values())


def _read(path: Path, md5: str | None, dataset: str, hint: str | None, stamp: Stamp | None) -> np.ndarray:
    buf = read_idx_bytes(path)
    if md5 is not None and not (stamp is not None and stamp.is_verified(path, md5)):
        check_md5(md5_bytes(buf), md5, path, dataset, hint)
        if stamp is not None:
            stamp.mark(path, md5)
    return parse_idx(buf, path)


def _check_split(images: np.ndarray, labels: np.ndarray, split: str, folder: Path, fix: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{split} images in {folder} have shape {images.shape}, expected (n, 28, 28): {fix}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{split} labels in {folder} have shape {labels.shape} for {images.shape[0]} images: {fix}"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{split} labels in {folder} go up to {labels.max()}, expected 0..9: {fix}")


def load_idx_folder(
    folder: Path,
    name: str,
    *,
    md5s: Mapping[str, str] | None,
    title: str,
    fix: str,
    hint: str | None = None,
    stamp: Stamp | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """Load the four IDX files of ``folder`` into a normalised :class:`Dataset`.

    Parameters
    ----------
    folder : pathlib.Path
        Folder holding the files.
    name : str
        Data set name stored in the result and used in ``ibhebb data fetch NAME``.
    md5s : mapping or None
        Expected MD5 of each file's decompressed content, keyed by file name;
        ``None`` skips the check.
    title : str
        Human name for messages, e.g. ``"MNIST"``.
    fix : str
        How to get the data, appended to messages, e.g.
        ``"run `ibhebb data fetch mnist`"``.
    hint : str, optional
        What to do about a corrupt file; defaults to deleting it and fetching.
    stamp : Stamp, optional
        Record of verified files; files it vouches for are not hashed again.
    n_train, n_test : int, optional
        Keep only the first samples of each split.

    Raises
    ------
    DataError
        If a file is missing, corrupt or inconsistent.
    """
    paths = find_files(folder)
    missing = [f for f, p in paths.items() if p is None]
    if len(missing) == len(FILES):
        raise DataError(f"{title} not found in {folder}: {fix}")
    if missing:
        raise DataError(f"{title} is incomplete in {folder} (missing {', '.join(missing)}): {fix}")
    arrays = {
        f: _read(p, None if md5s is None else md5s[f], name, hint, stamp) for f, p in paths.items()
    }
    if stamp is not None:
        stamp.save()
    _check_split(arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS], "train", folder, fix)
    _check_split(arrays[TEST_IMAGES], arrays[TEST_LABELS], "test", folder, fix)
    return Dataset(
        name=name,
        x_train=images_to_tensor(arrays[TRAIN_IMAGES][:n_train, None], MEAN, STD),
        y_train=labels_to_tensor(arrays[TRAIN_LABELS][:n_train]),
        x_test=images_to_tensor(arrays[TEST_IMAGES][:n_test, None], MEAN, STD),
        y_test=labels_to_tensor(arrays[TEST_LABELS][:n_test]),
        n_classes=10,
    )
