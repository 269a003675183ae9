"""The checkpoint file: a header that lets a reader check it, then the torch-saved state.

Layout::

    IBHEBB-CHECKPOINT\\n
    {"format": 1, "ibhebb": ..., "torch": ..., "config_hash": ..., "config": {...},
     "epoch": ..., "payload_bytes": ..., "sha256": ...}\\n
    <torch.save of the state dict>

:func:`read_checkpoint` verifies the magic line, the header, the payload's
length and SHA-256, the format and ibhebb versions and (when given a config)
the config hash before it unpickles anything, and it unpickles with
``weights_only=True``. Every failure is one :class:`CheckpointError` line
that says what is wrong with the file.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..fileio import atomic_write_bytes, io_error, warn

MAGIC = b"IBHEBB-CHECKPOINT\n"
FORMAT = 1
IGNORED_KEYS = ("epochs", "threads", "engine", "engine_chunk", "on_divergence")
"""Config keys that may change between a run and its resumption: the length of the run, how fast it runs (every
engine gives the same weights), and what to do on divergence."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt, or of another config or version."""


def _version() -> str:
    from .._version import __version__

    return __version__


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a dict without the keys a resumed run may change (:data:`IGNORED_KEYS`)."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`comparable_config`."""
    text = json.dumps(comparable_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def encode_checkpoint(state: dict[str, Any], config: dict[str, Any], epoch: int) -> bytes:
    """The bytes of a checkpoint file holding ``state`` for a run of ``config``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {
        "format": FORMAT,
        "ibhebb": _version(),
        "torch": torch.__version__,
        "config_hash": config_hash(config),
        "config": config,
        "epoch": epoch,
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def write_checkpoint(path: str | Path, state: dict[str, Any], config: dict[str, Any], epoch: int) -> int:
    """Write a checkpoint atomically (the previous one stays intact if this fails); returns its size in bytes."""
    data = encode_checkpoint(state, config, epoch)
    atomic_write_bytes(path, data)
    return len(data)


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The verified header and payload of a checkpoint (length and checksum checked, nothing unpickled)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as e:
        raise io_error(e, path, "read") from None
    if not data:
        raise CheckpointError(f"checkpoint {path} is empty (a write cut short?); start the run again without --resume")
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes, no header)")
        if data[:2] == b"PK":
            raise CheckpointError(
                f"checkpoint {path} was written by an ibhebb older than checkpoint format {FORMAT} "
                "(no header, so it cannot be verified); start a new run, or resume it with the ibhebb that wrote it"
            )
        raise CheckpointError(f"{path} is not an ibhebb checkpoint (garbage or another kind of file)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointError(f"checkpoint {path} is truncated inside its header ({len(data)} bytes)")
    try:
        header = json.loads(data[len(MAGIC) : end])
        if not isinstance(header, dict):
            raise ValueError
        fmt, size, digest = header["format"], int(header["payload_bytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} has a corrupt header") from None
    if fmt != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {fmt}, written by ibhebb {header.get('ibhebb', '?')}; "
            f"this ibhebb ({_version()}) reads format {FORMAT}"
        )
    payload = data[end + 1 :]
    if len(payload) < size:
        raise CheckpointError(f"checkpoint {path} is truncated: {len(payload)} of {size} payload bytes")
    if len(payload) > size or hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: its checksum does not match its contents")
    return header, payload


def read_checkpoint(
    path: str | Path, config: dict[str, Any] | None = None, *, map_location: Any = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and state of a checkpoint, after checking it.

    Parameters
    ----------
    path : path of the checkpoint file.
    config : dict, optional
        The config (as :meth:`Config.to_dict`) the checkpoint must belong to;
        keys in :data:`IGNORED_KEYS` may differ.
    map_location : where the tensors go (as for :func:`torch.load`).

    Raises
    ------
    CheckpointError
        If the file is missing, empty, truncated, corrupt, of another format or
        ibhebb version, or of another config (the message names the keys).
    """
    path = Path(path)
    header, payload = read_header(path)
    if header.get("ibhebb") != _version():
        raise CheckpointError(
            f"checkpoint {path} was written by ibhebb {header.get('ibhebb')}, this is ibhebb {_version()}; "
            "resume it with that version, or start a new run"
        )
    if config is not None and header.get("config_hash") != config_hash(config):
        theirs = header.get("config")
        diff = config_differences(comparable_config(config), comparable_config(theirs)) if isinstance(theirs, dict) else []
        which = f" (differs in {', '.join(diff[:6])}{', …' if len(diff) > 6 else ''})" if diff else ""
        raise CheckpointError(f"checkpoint {path} belongs to a run of another config{which}")
    if header.get("torch") != torch.__version__:
        warn(f"checkpoint {path} was written with torch {header.get('torch')}, this is torch {torch.__version__}; "
             "the resumed run may not match an uninterrupted one bit for bit")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a verified payload that still does not load: say what torch said
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely ({first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return header, state
