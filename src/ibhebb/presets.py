"""The configs that ship with ibhebb, found by name from any directory.

Each preset is a TOML file in the package's ``configs`` folder; its name is its
path there without ``.toml`` (``fig5-mnist``, ``table1/mnist-backprop-div``),
its description the first line of the file's opening comment.

Examples
--------
>>> from ibhebb.presets import preset_path, presets
>>> preset_path("fig4-xor").name
'fig4-xor.toml'
>>> "fig5-mnist" in presets()
True
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError

CONFIG_SUFFIX = ".toml"


def presets_dir() -> Path:
    """The folder of the packaged configs."""
    return Path(str(resources.files("ibhebb") / "configs"))


def presets() -> dict[str, Path]:
    """Every preset name and its file, sorted by name."""
    root = presets_dir()
    found = {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob(f"*{CONFIG_SUFFIX}")}
    return dict(sorted(found.items()))


def description(path: str | Path) -> str:
    """The first line of a TOML file's opening comment (without ``#``), or ``""``."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


def preset_path(name: str) -> Path | None:
    """The packaged file of preset ``name``, else ``None``.

    ``name`` is ``fig5-mnist``, ``fig5-mnist.toml`` or ``configs/fig5-mnist.toml``.
    """
    key = Path(str(name)).as_posix()
    if key.endswith(CONFIG_SUFFIX):
        key = key[: -len(CONFIG_SUFFIX)]
    if key.startswith("configs/"):
        key = key[len("configs/"):]
    return presets().get(key)


def resolve_config(path: str | Path) -> Path:
    """A config argument as a file: an existing path as given, else the preset of that name.

    Raises
    ------
    ConfigError
        If ``path`` is neither an existing file nor a preset.
    """
    given = Path(path)
    if given.is_file():
        return given
    preset = preset_path(str(path))
    if preset is not None:
        return preset
    raise ConfigError(
        f"config file {str(path)!r} does not exist and is not a preset name (`ibhebb configs` lists the presets)"
    )
