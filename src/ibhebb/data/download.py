"""Downloading files and unpacking archives without trusting their member names."""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from ibhebb.errors import DataError

from .checksum import md5_file

#: Seconds to wait for a server before giving up.
TIMEOUT = 60
_CHUNK = 1 << 16


def download(url: str, dest: Path, *, manual: str, md5: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, atomically, with an optional MD5 check.

    The file is written to ``dest.part`` and renamed only once complete and
    verified, so an interrupted download never looks finished.

    Parameters
    ----------
    url : str
        Source address.
    dest : pathlib.Path
        Destination file; its folder is created.
    manual : str
        What to do instead, used in the error message, e.g.
        ``"download it manually into /root/.cache/ibhebb/kmnist"``.
    md5 : str, optional
        Expected hex MD5 of the downloaded file.
    progress : bool
        Show a tqdm progress bar.

    Raises
    ------
    DataError
        If the server cannot be reached or the file does not match ``md5``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataError(f"this machine cannot reach {url} ({reason}): {manual}") from None
    if md5 is not None and md5_file(part) != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} is corrupt (md5 mismatch): try again, or {manual}")
    os.replace(part, dest)
    return dest


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member name as a relative path, or ``None`` if it could escape the target."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def extract_tar(archive: Path, dest: Path, members: dict[str, str] | None = None, prefix: str | None = None) -> list[Path]:
    """Extract regular files from a tar archive, never writing outside ``dest``.

    Links, devices and names that are absolute or contain ``..`` are skipped.
    File content is copied by hand, so member metadata (owners, modes) is
    ignored.

    Parameters
    ----------
    archive : pathlib.Path
        The (possibly compressed) tar file.
    dest : pathlib.Path
        Target folder; created if needed.
    members : dict, optional
        Map of member name to output name (relative to ``dest``); only these
        members are extracted.
    prefix : str, optional
        Extract only members under this folder name, keeping their paths.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    DataError
        If the archive is unreadable or a requested member is missing.
    """
    written: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if members is not None:
                    if info.name not in members:
                        continue
                    rel = _safe_member_path(members[info.name])
                else:
                    rel = _safe_member_path(info.name)
                    if rel is None or (prefix is not None and rel.parts[0] != prefix):
                        continue
                if rel is None:
                    continue
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                if src is None:
                    continue
                part = target.with_name(target.name + ".part")
                with src, open(part, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(part, target)
                written.append(target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}: delete it and fetch again") from None
    if members is not None:
        got = {p.relative_to(dest).as_posix() for p in written}
        lost = [m for m, out in members.items() if out not in got]
        if lost:
            raise DataError(f"archive {archive} lacks {', '.join(lost)}")
    return written
