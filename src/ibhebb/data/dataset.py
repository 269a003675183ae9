"""The in-memory data set container shared by every loader."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(repr=False)
class Dataset:
    """A train/test split held as tensors.

    Attributes
    ----------
    name : str
        Data set name, one of :data:`ibhebb.data.DATASETS`.
    x_train, x_test : torch.Tensor
        Normalised float32 inputs: ``(n, C, H, W)`` for images, ``(n, d)``
        for vectors.
    y_train, y_test : torch.Tensor
        int64 class labels, shape ``(n,)``.
    n_classes : int
        Number of classes; labels lie in ``[0, n_classes)``.
    x_val, y_val : torch.Tensor or None
        A held-out part of the training set (:func:`split_validation`), or ``None``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)`` or ``(2,)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        """Number of input features once a sample is flattened."""
        return math.prod(self.input_shape)

    def __repr__(self) -> str:
        val = "" if self.x_val is None else f", validation={tuple(self.x_val.shape)}"
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}{val}, "
            f"test={tuple(self.x_test.shape)}, n_classes={self.n_classes})"
        )


VALIDATION_SEED = 20_201_012
"""The split of :func:`split_validation` is one fixed permutation, the same for every run and seed."""


def split_validation(data: Dataset, fraction: float) -> Dataset:
    """Hold out ``round(fraction · n)`` training samples (a fixed random subset) as the validation set.

    Examples
    --------
    >>> import torch
    >>> d = Dataset("t", torch.zeros(10, 2), torch.arange(10), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 10)
    >>> s = split_validation(d, 0.2)
    >>> len(s.x_train), len(s.x_val), sorted(s.y_train.tolist() + s.y_val.tolist()) == list(range(10))
    (8, 2, True)
    """
    n = len(data.x_train)
    k = round(fraction * n)
    if fraction <= 0 or k == 0:
        return data
    if k >= n:
        raise ValueError(f"a validation fraction of {fraction} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED)).to(data.x_train.device)
    train, val = order[k:].sort().values, order[:k].sort().values
    return Dataset(data.name, data.x_train[train], data.y_train[train], data.x_test, data.y_test, data.n_classes,
                   data.x_train[val], data.y_train[val])


def images_to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """Turn uint8 images ``(n, C, H, W)`` into normalised float32 tensors.

    Computes ``(images / 255 - mean[c]) / std[c]`` for every channel ``c``.

    Parameters
    ----------
    images : numpy.ndarray
        uint8 array of shape ``(n, C, H, W)``.
    mean, std : sequence of float
        One value per channel.

    Returns
    -------
    torch.Tensor
        float32 tensor of the same shape.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    x.div_(255.0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    x.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return x


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Turn integer labels of any dtype into an int64 tensor of shape ``(n,)``."""
    return torch.from_numpy(np.asarray(labels).astype(np.int64).reshape(-1))
