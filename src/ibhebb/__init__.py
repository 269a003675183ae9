"""ibhebb: layer-local, biologically plausible learning rules from the information bottleneck.

The maths lives in pure functions (:mod:`ibhebb.functional.kernels`, :mod:`ibhebb.functional.signals`),
state in modules (:mod:`ibhebb.models`, :mod:`ibhebb.memory`), learning rules
behind one interface (:mod:`ibhebb.rules`), and the loops in one trainer
(:mod:`ibhebb.train`). :func:`load_run` gives a trained network back as a plain
``nn.Module``.

The mathematics is specified in ``docs/spec.md`` of the repository; docstrings
cite its sections as "MATH §n".
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):
    if name == "load_run":  # imported on first use: ``import ibhebb`` stays light
        from .app.runs import load_run

        return load_run
    raise AttributeError(f"module 'ibhebb' has no attribute {name!r}")
