"""The file ``ibhebb reservoir pretrain`` writes: a frozen reservoir bank and its trained readout."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError

FORMAT = "ibhebb-reservoir-v1"


def load_reservoir_file(path: str | Path) -> dict:
    """The dict a pre-training run saved; :class:`ConfigError` if missing or not one."""
    p = Path(path)
    if not str(path):
        raise ConfigError("rule.memory = 'reservoir' needs rule.reservoir = 'FILE.pt' (make one with: ibhebb reservoir pretrain)")
    if not p.is_file():
        raise ConfigError(f"rule.reservoir = {str(path)!r} does not exist (make one with: ibhebb reservoir pretrain CONFIG --out {p})")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"rule.reservoir = {str(path)!r} cannot be read as a reservoir file ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"rule.reservoir = {str(path)!r} is not a reservoir file written by 'ibhebb reservoir pretrain'")
    return state
