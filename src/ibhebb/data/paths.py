"""Where data sets live on disk."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the default data root.
ENV_VAR = "IBHEBB_DATA"

#: Data root used when neither an argument nor ``IBHEBB_DATA`` is given.
DEFAULT_ROOT = Path("~/.cache/ibhebb")


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds one sub-folder per data set.

    Parameters
    ----------
    root : path-like, optional
        Explicit root. When ``None``, the environment variable
        ``IBHEBB_DATA`` is used if set and non-empty, else ``~/.cache/ibhebb``.

    Returns
    -------
    pathlib.Path
        The root with ``~`` expanded. The folder is not created.
    """
    if root is None:
        env = os.environ.get(ENV_VAR, "").strip()
        root = env if env else DEFAULT_ROOT
    return Path(root).expanduser()
