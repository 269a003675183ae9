"""Fashion-MNIST, from the Debian package ``dataset-fashion-mnist`` or a local folder.

The Debian package installs the four gzip-compressed IDX files in
:data:`DEBIAN_DIR`. The same files, plain or ``.gz``, are also accepted in
``<root>/fashion-mnist/`` and in torchvision's ``<root>/FashionMNIST/raw/``,
which take precedence, in that order, when complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ibhebb.errors import DataError

from .checksum import STAMP_NAME, Stamp
from .dataset import Dataset
from .idx_folder import is_complete, load_idx_folder

NAME = "fashion-mnist"
#: Where the Debian package puts the files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
#: torchvision's folder of the files, under the data root.
TORCHVISION_DIR = Path("FashionMNIST") / "raw"
#: MD5 of each file's decompressed content.
MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def folder(root: Path) -> Path:
    """The local Fashion-MNIST folder inside the data root."""
    return root / NAME


def _fix(root: Path) -> str:
    return (
        f"run `ibhebb data fetch {NAME}` (or `apt-get install {DEBIAN_PACKAGE}`), "
        f"or put the four official IDX files in {folder(root)} (or torchvision's in {root / TORCHVISION_DIR})"
    )


def locate(root: Path) -> Path | None:
    """The folder holding all four files: the local one first, then torchvision's, then Debian's; else ``None``."""
    for where in (folder(root), root / TORCHVISION_DIR, DEBIAN_DIR):
        if is_complete(where):
            return where
    return None


def load(root: Path, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Load Fashion-MNIST, checking the MD5 of each decompressed file.

    Returns a :class:`Dataset` with images ``(n, 1, 28, 28)`` scaled to [-1, 1].

    Raises
    ------
    DataError
        If the files are missing or corrupt.
    """
    where = locate(root)
    if where is None:
        raise DataError(f"Fashion-MNIST not found in {folder(root)}, {root / TORCHVISION_DIR} or {DEBIAN_DIR}: {_fix(root)}")
    local = where == folder(root)
    hint = None if local else f"reinstall it with `apt-get install --reinstall {DEBIAN_PACKAGE}`"
    if where == root / TORCHVISION_DIR:
        hint = "replace it with the official file (e.g. delete it and download Fashion-MNIST again with torchvision)"
    stamp = Stamp(where / STAMP_NAME) if local else None
    return load_idx_folder(
        where, NAME, md5s=MD5, title="Fashion-MNIST", fix=_fix(root), hint=hint,
        stamp=stamp, n_train=n_train, n_test=n_test,
    )


def _apt_install() -> bool:
    """Try ``apt-get install``, then ``apt-get update`` and install again; True on success."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", DEBIAN_PACKAGE]
    try:
        if subprocess.run(install, env=env).returncode == 0:
            return True
        subprocess.run(["apt-get", "update"], env=env)
        return subprocess.run(install, env=env).returncode == 0
    except OSError:
        return False


def fetch(root: Path, progress: bool = True) -> Path:
    """Make Fashion-MNIST available and return the folder holding it.

    Uses an existing local or Debian copy; otherwise, when running as root
    with ``apt-get``, installs the Debian package.

    Raises
    ------
    DataError
        If the files cannot be obtained or are corrupt.
    """
    where = locate(root)
    if where is None:
        is_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if not (is_root and shutil.which("apt-get")):
            raise DataError(
                f"Fashion-MNIST not found: run `apt-get install {DEBIAN_PACKAGE}` as root, "
                f"or download the four official IDX files into {folder(root)}"
            )
        if progress:
            print(f"installing Fashion-MNIST with `apt-get install -y {DEBIAN_PACKAGE}` ...", flush=True)
        if not _apt_install() or not is_complete(DEBIAN_DIR):
            raise DataError(
                f"`apt-get install {DEBIAN_PACKAGE}` failed: download the four official IDX files "
                f"into {folder(root)} instead"
            )
        where = DEBIAN_DIR
    load(root, n_train=1, n_test=1)  # verifies every file's MD5
    if progress:
        print(f"Fashion-MNIST is in {where}", flush=True)
    return where
