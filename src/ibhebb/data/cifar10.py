"""CIFAR-10 in its official "python version" (pickled batches).

Expected layout: ``<root>/cifar10/cifar-10-batches-py/`` (where ``ibhebb data
fetch cifar10`` puts it) or torchvision's ``<root>/cifar-10-batches-py/``,
holding ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``, each checked against its official MD5. Each batch is a
pickled dict with ``b"data"`` (uint8, ``(n, 3072)``, one row per image,
channels first) and ``b"labels"`` (list of ints 0..9).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ibhebb.errors import DataError

from .checksum import STAMP_NAME, Stamp, verify_file
from .dataset import Dataset, images_to_tensor, labels_to_tensor
from .download import download, extract_tar

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
#: MD5 of each file of the official archive (the values torchvision checks).
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
#: Per-channel mean and standard deviation used for normalisation.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)
FIX = f"delete it and run `ibhebb data fetch {NAME}`"

# Globals a CIFAR batch may reference when unpickled; anything else is refused,
# so a tampered file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2 renamed numpy.core
        return super().find_class(module, name)


def folder(root: Path) -> Path:
    """The CIFAR-10 folder inside the data root."""
    return root / NAME


def batch_folder(root: Path) -> Path:
    """The folder holding the pickled batches."""
    return folder(root) / BATCH_DIR


def torchvision_folder(root: Path) -> Path:
    """Where torchvision's ``CIFAR10(root)`` keeps the batches."""
    return root / BATCH_DIR


def _has_batches(where: Path) -> bool:
    return all((where / b).is_file() for b in (*TRAIN_BATCHES, TEST_BATCH))


def locate(root: Path) -> Path | None:
    """The folder holding the batches: ibhebb's own, else torchvision's; ``None`` if neither has them all."""
    for where in (batch_folder(root), torchvision_folder(root)):
        if _has_batches(where):
            return where
    return None


def verify(where: Path, root: Path) -> None:
    """Check the MD5 of every batch in ``where`` (remembered in a stamp in ibhebb's own folder only).

    Raises
    ------
    DataError
        On a mismatch, naming the file.
    """
    own = where == batch_folder(root)
    hint = None if own else "replace it with the official file (e.g. delete it and download CIFAR-10 again with torchvision)"
    stamp = Stamp(where / STAMP_NAME) if own else None
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path, md5 = where / name, MD5[name]
        if stamp is None or not stamp.is_verified(path, md5):
            verify_file(path, md5, NAME, hint)
            if stamp is not None:
                stamp.mark(path, md5)
    if stamp is not None:
        stamp.save()


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled batch.

    Returns
    -------
    images : numpy.ndarray
        uint8, shape ``(n, 3, 32, 32)``.
    labels : numpy.ndarray
        int64, shape ``(n,)``, values 0..9.

    Raises
    ------
    DataError
        If the file is missing, cannot be unpickled or has the wrong content.
    """
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path} is missing: run `ibhebb data fetch {NAME}`")
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # unpickling can fail in many ways on a corrupt file
        raise DataError(f"CIFAR-10 batch {path} is corrupt ({type(exc).__name__}): {FIX}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-10 batch {path} has no uint8 (n, 3072) b'data' array: {FIX}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR-10 batch {path} has unreadable b'labels': {FIX}") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"CIFAR-10 batch {path} has {labels.shape} labels for {data.shape[0]} images: {FIX}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 batch {path} has labels outside 0..9: {FIX}")
    return data.reshape(-1, 3, 32, 32), labels


def load(root: Path, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Load CIFAR-10 as images ``(n, 3, 32, 32)``, normalised per channel.

    Raises
    ------
    DataError
        If the batches are missing or corrupt.
    """
    where = locate(root)
    if where is None:
        raise DataError(
            f"CIFAR-10 not found in {batch_folder(root)} or {torchvision_folder(root)}: run `ibhebb data fetch {NAME}`"
        )
    verify(where, root)
    train = [read_batch(where / b) for b in TRAIN_BATCHES]
    x_test, y_test = read_batch(where / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])[:n_train]
    y_train = np.concatenate([y for _, y in train])[:n_train]
    return Dataset(
        name=NAME,
        x_train=images_to_tensor(x_train, MEAN, STD),
        y_train=labels_to_tensor(y_train),
        x_test=images_to_tensor(x_test[:n_test], MEAN, STD),
        y_test=labels_to_tensor(y_test[:n_test]),
        n_classes=10,
    )


def _complete(root: Path) -> bool:
    where = batch_folder(root)
    return all((where / b).is_file() for b in (*TRAIN_BATCHES, TEST_BATCH, META))


def fetch(root: Path, progress: bool = True) -> Path:
    """Download and extract CIFAR-10 into ``<root>/cifar10/`` unless already there.

    Returns
    -------
    pathlib.Path
        The folder holding the batches.

    Raises
    ------
    DataError
        If the download fails or the archive is corrupt.
    """
    if _complete(root):
        return batch_folder(root)
    theirs = torchvision_folder(root)
    if _has_batches(theirs):  # torchvision's copy: used where it is, once verified
        verify(theirs, root)
        return theirs
    archive = folder(root) / ARCHIVE
    manual = f"download {URL} by hand and extract it into {folder(root)}"
    download(URL, archive, manual=manual, md5=ARCHIVE_MD5, progress=progress)
    extract_tar(archive, folder(root), prefix=BATCH_DIR)
    archive.unlink(missing_ok=True)
    if not _complete(root):
        raise DataError(f"archive {URL} did not hold the expected batches: {manual}")
    return batch_folder(root)
