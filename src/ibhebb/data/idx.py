"""Reading and writing IDX files, the format of MNIST-style data sets.

An IDX file is a header -- two zero bytes, a type code (``0x08`` for
unsigned bytes), the number of dimensions -- followed by one big-endian
uint32 per dimension and the raw values. Only unsigned-byte files with one
dimension (labels, magic ``0x0801``) or three dimensions (images, magic
``0x0803``) are accepted.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ibhebb.errors import DataError

#: Magic number of a label file: unsigned bytes, one dimension.
MAGIC_LABELS = 0x0801
#: Magic number of an image file: unsigned bytes, three dimensions.
MAGIC_IMAGES = 0x0803
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the (decompressed) bytes of an IDX file, plain or gzip.

    Raises
    ------
    DataError
        If the file cannot be read or is not valid gzip.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None


def parse_idx(buf: bytes, path: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file.

    Parameters
    ----------
    buf : bytes
        The whole file.
    path : path-like
        File name used in error messages.

    Returns
    -------
    numpy.ndarray
        Writable uint8 array with the dimensions given in the header.

    Raises
    ------
    DataError
        On a wrong magic number or a byte count that does not match the
        header (truncated or padded file).
    """
    if len(buf) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(buf)} bytes, no header")
    magic = struct.unpack(">I", buf[:4])[0]
    if magic not in (MAGIC_LABELS, MAGIC_IMAGES):
        raise DataError(
            f"IDX file {path} has magic number 0x{magic:08x}, expected 0x{MAGIC_LABELS:08x} "
            f"(labels) or 0x{MAGIC_IMAGES:08x} (images): not an unsigned-byte IDX file"
        )
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(buf) != expected:
        kind = "truncated" if len(buf) < expected else "padded"
        raise DataError(
            f"IDX file {path} is {kind}: {len(buf)} bytes, header {list(dims)} needs {expected}"
        )
    out = np.empty(dims, dtype=np.uint8)
    out.reshape(-1)[:] = np.frombuffer(buf, dtype=np.uint8, offset=header)
    return out


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a uint8 array.

    Parameters
    ----------
    path : path-like
        The file; gzip compression is detected from its content.

    Returns
    -------
    numpy.ndarray
        uint8 array, ``(n,)`` for labels or ``(n, rows, cols)`` for images.

    Raises
    ------
    DataError
        If the file is unreadable, has a wrong magic number, or its size does
        not match its header.
    """
    return parse_idx(read_idx_bytes(path), path)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array of 1 or 3 dimensions as an IDX file.

    The file is gzip-compressed when ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : path-like
        Destination file.
    array : numpy.ndarray
        uint8 values, shape ``(n,)`` or ``(n, rows, cols)``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"write_idx needs a uint8 array of 1 or 3 dims, got {array.dtype} {array.shape}")
    header = struct.pack(">BBBB", 0, 0, _UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def find_idx(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or ``folder/name.gz``, whichever exists, else ``None``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None
