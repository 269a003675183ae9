"""Working memories: where the window of past samples, and so ξ, comes from (MATH §4)."""
from torch import nn

from .reservoir import ReservoirMemory
from .window import MEMORIES, WINDOW_MODES, WindowMemory


def make_memory(mode: str, window: int, *, sigmas=(0.5, 0.1, 1.0), reservoir: str = "") -> nn.Module:
    """A working memory by name (one of :data:`MEMORIES`); ``reservoir`` is the pre-trained file of mode ``reservoir``."""
    if mode == "reservoir":
        return ReservoirMemory(reservoir, window, sigmas=sigmas)
    return WindowMemory(window, mode, sigmas)


__all__ = ["MEMORIES", "ReservoirMemory", "WINDOW_MODES", "WindowMemory", "make_memory"]
