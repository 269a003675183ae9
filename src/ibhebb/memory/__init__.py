"""Working memories: where the window of past samples, and so ξ, comes from (MATH §4)."""
from .window import MEMORIES, WindowMemory, make_memory
from .reservoir import ReservoirMemory

__all__ = ["MEMORIES", "ReservoirMemory", "WindowMemory", "make_memory"]
