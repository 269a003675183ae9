"""A fast path for online ``biohsic`` training that gives the eager loop's weights.

``make_engine(model, rule, optimizer)`` returns an :class:`OnlineEngine`
for what it can run (``biohsic`` with the ``buffer``, ``recompute`` or
``reservoir`` memory, an ``MLP`` or ``LeakyMLP``, AdamW / Adam / SGD);
:func:`unsupported` says why a config cannot use it. On the CPU the engine runs a hand-written C step
(:mod:`.native`), elsewhere (or without a C compiler) the step of
:mod:`.step` under ``torch.compile`` and CUDA graphs.

Examples
--------
>>> from ibhebb.config import load_config
>>> from ibhebb.engine import unsupported
>>> unsupported(load_config(None, {"rule": {"name": "backprop"}}))
"rule 'backprop' is not the online rule biohsic"
"""
from __future__ import annotations

from .optim import OPTIMIZERS, OptimSpec, optimizer_update_
from .runner import MODES, OnlineEngine
from .state import bind, unbind
from .step import EngineState, ReservoirSpec, StepSpec, chunk_step_, fill_step_, leaky_update_, sample_step_

ENGINES = ("auto", "fast", "native", "compile", "eager")
"""``cfg.engine``: ``fast`` is the engine by whatever path works, ``native``/``compile`` one path only."""
MEMORIES = ("buffer", "recompute", "reservoir")
MODELS = ("mlp", "lif-mlp")


def unsupported(cfg) -> str | None:
    """Why the fast engine cannot run ``cfg`` (``None`` if it can)."""
    r = cfg.rule
    if r.name != "biohsic":
        return f"rule {r.name!r} is not the online rule biohsic"
    if r.memory not in MEMORIES:
        return f"memory {r.memory!r} is not one of {', '.join(MEMORIES)}"
    if cfg.model.kind not in MODELS:
        return f"model.kind {cfg.model.kind!r} is not one of {', '.join(MODELS)}"
    if cfg.optim.name not in OPTIMIZERS:
        return f"optimiser {cfg.optim.name!r} is not one of {', '.join(OPTIMIZERS)}"
    return None


def step_spec(model, rule, optimizer) -> StepSpec:
    """The :class:`StepSpec` of a built model, ``biohsic`` rule and optimiser."""
    from ..memory.reservoir import ReservoirMemory
    from ..memory.window import WindowMemory
    from ..models.networks import MLP, LeakyMLP
    from ..rules.biohsic import BioHSIC

    if type(model) not in (MLP, LeakyMLP):
        raise ValueError(f"no fast step for {type(model).__name__}")
    if type(rule) is not BioHSIC or type(getattr(rule, "memory", None)) not in (WindowMemory, ReservoirMemory):
        raise ValueError(f"no fast step for rule {type(rule).__name__} with its memory")
    hidden = model.hidden
    first = hidden[0]
    if any(l.activation != first.activation or l.layernorm != first.layernorm for l in hidden):
        raise ValueError("hidden layers with different activations have no fast step")
    leaky = isinstance(model, LeakyMLP)
    reservoir = None
    if isinstance(rule.memory, ReservoirMemory):
        mem = rule.memory
        if mem.reservoir.noise_hidden > 0 or mem.noise_out > 0:
            raise ValueError("no fast step for a noisy reservoir (its noise comes from torch's random stream)")
        steps = max(1, mem.steps // (int(model.steps) if leaky else 1))
        reservoir = ReservoirSpec(steps, float(mem.reservoir.lr), float(mem.reservoir.sr), bool(mem.feedback))
    return StepSpec(
        n_hidden=len(hidden),
        activation=first.activation,
        layernorm=first.layernorm,
        leak=float(model.leak) if leaky else None,
        steps=int(model.steps) if leaky else 1,
        window=int(rule.memory.window_size),
        memory=rule.memory.mode,  # "buffer", "recompute" or "reservoir"
        variant=rule.variant,
        gamma=float(rule.gamma),
        sigmas=tuple(float(s) for s in rule.sigmas),
        optim=OptimSpec.of(optimizer),
        reservoir=reservoir,
    )


COMPILE_MIN_UPDATES = 100_000
"""Below this many updates in a run, ``torch.compile`` costs more than it saves (the C step is always worth it)."""


def worth_compiling(cfg, n_train: int) -> bool:
    """Whether a run is long enough to amortise ``torch.compile`` (a minute or more on a CPU)."""
    steps = cfg.model.steps if cfg.model.kind == "lif-mlp" else 1
    return cfg.epochs * n_train * steps >= COMPILE_MIN_UPDATES


def engine_mode(engine: str) -> str:
    """The :class:`OnlineEngine` mode of a config's ``engine`` value (not ``eager``, which skips the engine)."""
    return {"auto": "auto", "fast": "auto", "native": "native", "compile": "compile"}[engine]


def make_engine(model, rule, optimizer, *, mode: str = "auto", **kwargs) -> OnlineEngine:
    """An :class:`OnlineEngine` for a built model, rule and optimiser (``ValueError`` if it has none)."""
    return OnlineEngine(step_spec(model, rule, optimizer), model, rule.memory, optimizer, mode=mode, **kwargs)


__all__ = [
    "COMPILE_MIN_UPDATES", "ENGINES", "EngineState", "engine_mode", "worth_compiling", "MODES", "OnlineEngine", "OptimSpec", "StepSpec", "bind", "chunk_step_",
    "fill_step_", "leaky_update_", "make_engine", "optimizer_update_", "sample_step_", "step_spec", "unbind", "unsupported",
]
