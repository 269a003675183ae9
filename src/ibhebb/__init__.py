"""ibhebb: layer-local, biologically plausible learning rules from the information bottleneck.

The package is built in floors, each importing only from those below it
(``docs/architecture.md``):

- :mod:`ibhebb.functional` — the maths as pure functions of tensors (kernels, HSIC, ξ, pHSIC, layers, optimisers,
  the reservoir step, the biohsic step);
- :mod:`ibhebb.models`, :mod:`ibhebb.memory`, :mod:`ibhebb.reservoir` — modules holding parameters and state;
- :mod:`ibhebb.rules` — every learning rule behind one interface, writing ``.grad``; :class:`BioHSICLearner` and
  :class:`PHSICLearner` run them on your own ``nn.Sequential``;
- :mod:`ibhebb.engine` — the fast online step (torch and C);
- :mod:`ibhebb.train` — the trainer; :mod:`ibhebb.app` — sweeps, the bench, plots, :func:`load_run` (a trained
  network back as a plain ``nn.Module``); :mod:`ibhebb.cli` — ``ibhebb``.

The mathematics is specified in ``docs/spec.md`` of the repository; docstrings cite its sections as "MATH §n".

Examples
--------
>>> import torch, ibhebb
>>> model = ibhebb.MLP(784, [128, 64], 10, replicas=3, seed=0)
>>> rule = ibhebb.make_rule("biohsic", model, ibhebb.RuleConfig(window=8))
>>> sorted(ibhebb.RULES)[:3]
['backprop', 'biohsic', 'feedback-alignment']
"""
from ._version import __version__

from .config import Config, RuleConfig, load_config
from .errors import ConfigError, DataError, UserError
from .functional.kernels import hsic, hsic_bottleneck, kernel_matrix
from .functional.signals import VARIANTS, global_signal
from .data import DATASETS, fetch_dataset, load_dataset
from .models import CNN, MLP, PHSICMLP, LeakyMLP, build_model
from .memory import MEMORIES, ReservoirMemory, WindowMemory, make_memory
from .rules import RULES, Rule, make_rule, register_rule
from .rules.learners import BioHSICLearner, PHSICLearner
from .engine import ENGINES, OnlineEngine, make_engine
from .train import Trainer, evaluate, train
from .app.runs import load_run

__all__ = [
    "BioHSICLearner", "CNN", "Config", "ConfigError", "DATASETS", "DataError", "ENGINES", "LeakyMLP", "MEMORIES",
    "MLP", "OnlineEngine", "PHSICLearner", "PHSICMLP", "RULES", "ReservoirMemory", "Rule", "RuleConfig", "Trainer",
    "UserError", "VARIANTS", "WindowMemory", "__version__", "build_model", "evaluate", "fetch_dataset",
    "global_signal", "hsic", "hsic_bottleneck", "kernel_matrix", "load_config", "load_dataset", "load_run", "make_engine",
    "make_memory", "make_rule", "register_rule", "train",
]
