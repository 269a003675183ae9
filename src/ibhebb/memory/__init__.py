"""Working memories: where the window of past samples, and so ξ, comes from (MATH §4)."""
from torch import nn

from .features import FeatureMemory
from .reservoir import ReservoirMemory
from .window import MEMORIES, WINDOW_MODES, WindowMemory


def make_memory(mode: str, window: int, *, sigmas=(0.5, 0.1, 1.0), reservoir: str = "", **features) -> nn.Module:
    """A working memory by name (one of :data:`MEMORIES`).

    ``reservoir`` is the pre-trained file of mode ``reservoir``; ``features`` the keyword arguments of
    :class:`FeatureMemory` for mode ``features``.
    """
    if mode == "reservoir":
        return ReservoirMemory(reservoir, window, sigmas=sigmas)
    if mode == "features":
        return FeatureMemory(window, sigmas=sigmas, **features)
    return WindowMemory(window, mode, sigmas)


__all__ = ["FeatureMemory", "MEMORIES", "ReservoirMemory", "WINDOW_MODES", "WindowMemory", "make_memory"]
