"""MD5 checks of data files, with a stamp that remembers files already checked."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ibhebb.errors import DataError

#: Name of the stamp file written next to verified files.
STAMP_NAME = ".verified"


def md5_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex MD5 of a file's raw bytes, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_bytes(data: bytes) -> str:
    """Return the hex MD5 of bytes held in memory."""
    return hashlib.md5(data).hexdigest()


def corrupt_message(path: Path, dataset: str, hint: str | None = None) -> str:
    """One-line message for a file whose MD5 does not match."""
    fix = hint or f"delete it and run `ibhebb data fetch {dataset}`"
    return f"{path} is corrupt (md5 mismatch): {fix}"


def check_md5(actual: str, expected: str, path: Path, dataset: str, hint: str | None = None) -> None:
    """Raise :class:`DataError` if ``actual`` differs from ``expected``."""
    if actual != expected:
        raise DataError(corrupt_message(path, dataset, hint))


def verify_file(path: str | os.PathLike[str], expected: str, dataset: str, hint: str | None = None) -> None:
    """Check the MD5 of a file's raw bytes, raising :class:`DataError` on mismatch."""
    path = Path(path)
    check_md5(md5_file(path), expected, path, dataset, hint)


class Stamp:
    """A record of files whose MD5 was checked, keyed by size and mtime.

    The stamp is a small JSON file. A file counts as verified while its size,
    modification time and expected MD5 are unchanged since it was checked, so
    repeated loads skip hashing. Failure to write the stamp is ignored.

    Parameters
    ----------
    path : path-like
        The stamp file, usually ``<folder>/.verified``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._changed = False
        try:
            entries = json.loads(self.path.read_text())
            self._entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            self._entries = {}

    @staticmethod
    def _key(path: Path) -> str:
        return str(path.resolve())

    @staticmethod
    def _signature(path: Path, md5: str) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, md5]

    def is_verified(self, path: Path, md5: str) -> bool:
        """Whether ``path`` was checked against ``md5`` and has not changed since."""
        try:
            return self._entries.get(self._key(path)) == self._signature(path, md5)
        except OSError:
            return False

    def mark(self, path: Path, md5: str) -> None:
        """Record that ``path`` matched ``md5``."""
        self._entries[self._key(path)] = self._signature(path, md5)
        self._changed = True

    def save(self) -> None:
        """Write the stamp if anything was marked; errors are ignored."""
        if not self._changed:
            return
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self._entries, indent=1))
            os.replace(tmp, self.path)
            self._changed = False
        except OSError:
            pass
