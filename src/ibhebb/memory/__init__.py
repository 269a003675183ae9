"""Working memories: where the window of past samples, and so ξ, comes from (MATH §4)."""
from .window import MEMORIES, WindowMemory, make_memory

__all__ = ["MEMORIES", "WindowMemory", "make_memory"]
