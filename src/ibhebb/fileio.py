"""Files a run writes and reads back: atomic writes, tolerant JSON lines, a lock on a run directory.

Every file is written whole or not at all: the bytes go to a temporary file
in the same directory, are flushed and fsynced, and the temporary file is
renamed over the target, so a crash or a full disk leaves the previous
version in place. Failures become one-line :class:`~ibhebb.errors.UserError`
messages. This module uses the standard library only, so that every floor of
the package can write through it.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from .errors import UserError

LOCK = ".ibhebb.lock"


def warn(message: str) -> None:
    """One line ``ibhebb: warning: …`` on stderr (a recoverable fault the user should know of)."""
    print(f"ibhebb: warning: {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def temp_path(path: str | Path) -> Path:
    """The temporary file an atomic write of ``path`` goes through (same directory, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def io_error(e: OSError, path: str | Path, action: str = "write", needed: int | None = None) -> UserError:
    """A one-line :class:`UserError` for an ``OSError`` met while ``action``-ing ``path``."""
    path = Path(path)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = human_bytes(shutil.disk_usage(path.parent).free)
        except OSError:
            free = "unknown"
        need = f"{human_bytes(needed)} needed, " if needed is not None else ""
        return UserError(
            f"disk full while writing {path} ({need}{free} free on its file system); "
            f"the previous {path.name} is left as it was: free some space and run again"
        )
    reason = e.strerror or type(e).__name__
    return UserError(f"cannot {action} {path}: {reason}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (temporary file, flush, fsync, rename).

    Raises
    ------
    UserError
        If the directory is missing or not writable, or the disk is full (the
        message says how much was needed); ``path`` then keeps its old contents.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise io_error(e, path, needed=len(data)) from None
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON plus a newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_figure_atomic(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` into memory, then :func:`atomic_write_bytes` (the format follows the suffix)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in ``path``; a one-line :class:`UserError` if it cannot be read or parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise io_error(e, path, "read") from None
    except ValueError:
        raise UserError(f"{what} {path} is corrupt (not valid JSON); remove it or start again in another directory") from None


def read_jsonl(path: str | Path) -> tuple[list[dict], bool]:
    """The records of a JSON-lines file, and whether a torn last line was left out.

    A last line that does not parse (a write cut short by a crash) is dropped;
    a bad line before the last one means the file is corrupt.

    Raises
    ------
    UserError
        If the file cannot be read or a line other than the last is not JSON.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise io_error(e, path, "read") from None
    lines = text.split("\n")
    records, torn = [], False
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    for k, (i, ln) in enumerate(numbered):
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if k == len(numbered) - 1:
                torn = True
                break
            raise UserError(f"{path} is corrupt at line {i} (not a JSON record); remove that line or start a new run") from None
        records.append(rec)
    return records, torn


def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    """All ``records``, one JSON object a line, written atomically."""
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def prepare_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create ``path`` (and its parents) or raise a one-line :class:`UserError` saying why it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is an existing file, not a directory; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {path} cannot be created: a part of that path is a file") from None
    except NotADirectoryError:
        raise UserError(f"{what} {path} cannot be created: a part of that path is a file") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be created: {e.strerror or type(e).__name__}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} is not writable")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: a file holding the owner's PID and host.

    A lock left by a process that is no longer alive on this host is taken
    over with a warning; a live owner (or one on another host, whose state
    cannot be checked from here) makes :meth:`acquire` raise a :class:`UserError`.
    """

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise io_error(e, self.path, "create the lock file") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.owner) + "\n")
        return True

    def _read_owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
            return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            owner = self._read_owner()
            if owner is not None and owner.get("host") != self.owner["host"]:
                raise UserError(
                    f"{self.path.parent} is in use by process {owner['pid']} on host {owner.get('host')} "
                    f"(lock file {self.path}); if no run is going on there, delete that file"
                )
            if owner is not None and owner["pid"] == os.getpid():  # this process's own (a trainer never run)
                self.path.unlink(missing_ok=True)
                continue
            if owner is not None and _pid_alive(owner["pid"]):
                raise UserError(
                    f"{self.path.parent} is in use by another ibhebb process (PID {owner['pid']} on {owner['host']}); "
                    "wait for it to finish or choose another --out"
                )
            what = f"process {owner['pid']}, no longer running" if owner is not None else "an unreadable lock file"
            warn(f"taking over the stale lock {self.path} ({what})")
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise io_error(e, self.path, "remove the stale lock file") from None
        raise UserError(f"cannot lock {self.path.parent}: another process keeps taking the lock")

    def release(self) -> None:
        if self.held:
            owner = self._read_owner()
            if owner is not None and owner.get("pid") == self.owner["pid"] and owner.get("host") == self.owner["host"]:
                try:
                    self.path.unlink()
                except OSError:
                    pass
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
