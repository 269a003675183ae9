"""Small synthetic two-dimensional data sets, generated from a seed."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset

#: Default number of training and test points.
N_TRAIN = 900
N_TEST = 100
#: Standard deviation of the noise added to the XOR corners.
XOR_NOISE = 0.1


def linear_weights(seed: int = 0) -> np.ndarray:
    """The weight vector ``w`` of the ``linear`` set drawn for ``seed``, shape ``(2,)``."""
    return np.random.default_rng(seed).normal(size=2)


def _split(name: str, x: np.ndarray, y: np.ndarray, n_train: int) -> Dataset:
    x_t = torch.from_numpy(x.astype(np.float32))
    y_t = torch.from_numpy(y.astype(np.int64))
    return Dataset(name, x_t[:n_train].clone(), y_t[:n_train].clone(), x_t[n_train:].clone(), y_t[n_train:].clone(), 2)


def make_linear(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Dataset:
    """A linearly separable set: ``x ~ U([-1, 1]^2)``, label ``1[w . x > 0]``.

    ``w ~ N(0, I_2)`` is drawn first from the seed's generator (see
    :func:`linear_weights`), then all ``n_train + n_test`` points, which are
    split in order.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=2)
    x = rng.uniform(-1.0, 1.0, size=(n_train + n_test, 2))
    y = (x @ w > 0).astype(np.int64)
    return _split("linear", x, y, n_train)


def make_xor(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Dataset:
    """The XOR problem: a random corner ``c`` of ``{0, 1}^2`` plus ``N(0, 0.1^2)`` noise.

    The label is ``c[0] XOR c[1]``; points are drawn at once and split in order.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    corners = rng.integers(0, 2, size=(n, 2))
    x = corners + rng.normal(0.0, XOR_NOISE, size=(n, 2))
    y = corners[:, 0] ^ corners[:, 1]
    return _split("xor", x, y, n_train)
