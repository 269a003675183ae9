"""ibhebb: layer-local, biologically plausible learning rules from the information bottleneck.

The maths lives in pure functions (:mod:`ibhebb.functional.kernels`, :mod:`ibhebb.functional.signals`),
state in modules (:mod:`ibhebb.models`, :mod:`ibhebb.memory`), learning rules
behind one interface (:mod:`ibhebb.rules`), and the loops in one trainer
(:mod:`ibhebb.train`).
"""
__version__ = "0.1.0"
