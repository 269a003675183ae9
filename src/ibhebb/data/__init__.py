"""Data sets: loading into tensors, and fetching the files they come from.

Image sets live in one folder each under the data root (see
:func:`data_root`); the synthetic sets are generated from a seed.

Examples
--------
>>> from ibhebb.data import fetch_dataset, load_dataset
>>> fetch_dataset("mnist")          # doctest: +SKIP
>>> ds = load_dataset("mnist")      # doctest: +SKIP
>>> ds.x_train.shape, ds.n_classes  # doctest: +SKIP
(torch.Size([60000, 1, 28, 28]), 10)
"""

from __future__ import annotations

import os
from pathlib import Path

from ibhebb.config import register_check, require, require_choice
from ibhebb.errors import ConfigError, DataError

from . import cifar10, fashion_mnist, kmnist, mnist, synthetic
from .dataset import Dataset
from .paths import data_root

__all__ = ["DATASETS", "Dataset", "data_root", "fetch_dataset", "load_dataset"]

#: Names accepted by :func:`load_dataset` and :func:`fetch_dataset`.
DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "kmnist", "cifar10", "linear", "xor")

_FILE_SETS = {
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "kmnist": kmnist,
    "cifar10": cifar10,
}
_SYNTHETIC = {"linear": synthetic.make_linear, "xor": synthetic.make_xor}


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    return key


def _count(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer or None, got {value!r}")
    return value


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """Load a data set into memory as normalised tensors.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : path-like, optional
        Data root; see :func:`data_root`.
    seed : int
        Seed of the synthetic sets (``linear``, ``xor``); ignored otherwise.
    n_train, n_test : int, optional
        For file-based sets, keep only the first ``n`` samples of each split.
        For synthetic sets, the number of points generated (default 900 / 100).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the name is unknown or the files are missing or corrupt; the
        message says how to get them.
    ConfigError
        If ``n_train`` or ``n_test`` is not a positive integer.
    """
    key = _canonical(name)
    n_train, n_test = _count(n_train, "n_train"), _count(n_test, "n_test")
    if key in _SYNTHETIC:
        return _SYNTHETIC[key](
            seed=seed,
            n_train=synthetic.N_TRAIN if n_train is None else n_train,
            n_test=synthetic.N_TEST if n_test is None else n_test,
        )
    return _FILE_SETS[key].load(data_root(root), n_train=n_train, n_test=n_test)


def fetch_dataset(name: str, *, root: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Obtain a data set's files unless they are already present and valid.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : path-like, optional
        Data root; see :func:`data_root`.
    progress : bool
        Print progress (download bars, commands being run).

    Returns
    -------
    pathlib.Path
        The folder holding the files. Synthetic sets need no files: their
        name is accepted and the data root is returned untouched.

    Raises
    ------
    DataError
        If the files cannot be obtained; the message says how to get them by hand.
    """
    key = _canonical(name)
    if key in _SYNTHETIC:
        return data_root(root)
    return _FILE_SETS[key].fetch(data_root(root), progress=progress)


IMAGE_SETS = ("mnist", "fashion-mnist", "kmnist", "cifar10")
"""The data sets of images (the others are vectors)."""


@register_check
def check_data_config(cfg) -> None:
    """``data.name`` exists, and augmentation only for images."""
    require_choice(cfg.data.name, DATASETS, "data.name")
    require(not cfg.data.augment or cfg.data.name in IMAGE_SETS, "data.augment needs images; linear/xor are vectors")
