"""A fast path for online ``biohsic`` training that gives the rule loop's weights.

``make_engine(model, rule, optimizer)`` returns an :class:`OnlineEngine` for
what it can run; :mod:`.capability` holds one table per backend (the torch
step and the C step) saying what that is, and :func:`unsupported` asks it
about a config. On the CPU the engine runs the C step (:mod:`.cstep`),
elsewhere (or where the C step cannot run this config) the torch step of
:mod:`.step`, under ``torch.compile`` and CUDA graphs.

Examples
--------
>>> from ibhebb.config import load_config
>>> from ibhebb.engine import unsupported
>>> unsupported(load_config(None, {"rule": {"name": "backprop"}}))
"rule 'backprop' is not one of biohsic"
"""
from __future__ import annotations

import warnings

from ..config import register_check, require, require_choice
from ..functional.optim import OptimSpec
from .capability import CONV_MODELS, NATIVE, TORCH, config_facts, spec_facts
from .runner import MODES, OnlineEngine
from .state import bind, unbind
from .step import EngineState, FeatureSpec, ReservoirSpec, StepSpec, chunk_step_, fill_step_, leaky_update_, sample_step_

ENGINES = ("auto", "fast", "native", "compile", "rule")
"""``cfg.engine``: ``auto`` the engine where it can run, else the rule's loop; ``fast`` the engine by whatever path
works; ``native``/``compile`` one path only; ``rule`` the rule's own loop (``rule.updates`` + ``optimizer.step()``)."""
ENGINE_ALIASES = {"eager": "rule"}
"""Old spellings of :data:`ENGINES`, accepted with a deprecation warning."""


def canonical_engine(engine: str) -> str:
    """``engine`` with an old spelling replaced (and a :class:`FutureWarning` saying so)."""
    if engine in ENGINE_ALIASES:
        new = ENGINE_ALIASES[engine]
        warnings.warn(f"engine = {engine!r} is deprecated; it is now spelled {new!r}", FutureWarning, stacklevel=3)
        return new
    return engine


@register_check
def check_engine_config(cfg) -> None:
    """``engine`` exists (an old spelling is renamed), and an engine the config insists on can run it."""
    cfg.engine = canonical_engine(cfg.engine)
    require_choice(cfg.engine, ENGINES, "engine")
    if cfg.engine not in ("auto", "rule"):
        reason = unsupported(cfg)
        require(reason is None, f"engine = {cfg.engine!r} cannot run this config: {reason} (use engine = 'auto' or 'rule')")


def unsupported(cfg, engine: str | None = None) -> str | None:
    """Why the engine cannot run ``cfg`` by ``engine`` (default ``cfg.engine``; ``None`` if it can).

    ``native`` asks the C step's table, every other value the torch step's (which can run wherever the
    engine can).
    """
    engine = cfg.engine if engine is None else engine
    table = NATIVE if engine == "native" else TORCH
    m = cfg.model
    spiking = None
    if m.kind == "spiking-mlp":
        spiking = spiking_why_not(cfg.rule.memory, m.encoding != "current" or m.firing == "escape", engine)
    features = features_why_not(m.kind, bool(getattr(cfg.rule, "memory_check", False))) if cfg.rule.memory == "features" else None
    return table.why_not(config_facts(cfg)) or spiking or features


def features_why_not(kind: str, check: bool) -> str | None:
    """Why the engine cannot run the features memory on a ``model.kind`` (``None`` if it can)."""
    if kind not in ("mlp", "lif-mlp"):
        return f"no fast step for model.kind = {kind!r} with the features memory (only 'mlp' and 'lif-mlp')"
    if check:
        return "no fast step with rule.memory_check (its comparison buffer runs in the rule's loop)"
    return None


def spiking_why_not(memory: str, random: bool, engine: str = "auto") -> str | None:
    """Why the engine cannot run a spiking network with this memory (``None`` if it can)."""
    if memory == "reservoir":
        return "no fast step for a spiking network with the reservoir memory"
    if memory == "recompute" and random:
        return ("no fast step for a spiking network with random spikes (an encoding or escape noise) and the recompute "
                "memory (its re-presentations draw from the model's stream)")
    return None


def step_spec(model, rule, optimizer) -> StepSpec:
    """The :class:`StepSpec` of a built model, ``biohsic`` rule and optimiser (``ValueError`` saying why there is none)."""
    if getattr(rule, "name", None) != "biohsic":
        raise ValueError(f"no fast step for rule {getattr(rule, 'name', type(rule).__name__)!r}")
    kind = getattr(model, "kind", type(model).__name__)
    reason = TORCH.why_not({"model": kind, "memory": getattr(rule.memory, "mode", None)})
    if reason is not None:
        raise ValueError(f"no fast step: {reason}")
    hidden = model.hidden
    first = hidden[0]
    if any((l.activation, l.layernorm, l.layernorm_eps) != (first.activation, first.layernorm, first.layernorm_eps) for l in hidden):
        raise ValueError("hidden layers with different activations have no fast step")
    leaky = kind in ("lif-mlp", "spiking-mlp")
    dyn = model.dynamics if kind == "spiking-mlp" else None
    if dyn is not None:
        reason = spiking_why_not(rule.memory.mode, dyn.random)
        if reason is not None:
            raise ValueError(reason)
    conv = kind in CONV_MODELS
    reservoir = None
    if conv and rule.memory.mode == "reservoir":
        raise ValueError("no fast step for a cnn with the reservoir memory")
    if rule.memory.mode == "reservoir":
        mem = rule.memory
        if mem.reservoir.noise_hidden > 0 or mem.noise_out > 0:
            raise ValueError("no fast step for a noisy reservoir (its noise comes from torch's random stream)")
        steps = max(1, mem.steps // (int(model.steps) if leaky else 1))
        reservoir = ReservoirSpec(steps, float(mem.reservoir.lr), float(mem.reservoir.sr), bool(mem.feedback))
    features = None
    if rule.memory.mode == "features":
        mem = rule.memory
        reason = features_why_not(kind, mem.buffer is not None)
        if reason is not None:
            raise ValueError(reason)
        features = FeatureSpec(mem.features, float(mem.lam), tuple(float(c) for c in mem.coef))
    p = rule.params
    spec = StepSpec(
        n_hidden=len(hidden),
        activation=first.activation,
        layernorm=first.layernorm,
        leak=(dyn.neuron.dt / dyn.neuron.tau_mem if dyn is not None else float(model.leak)) if leaky else None,
        steps=int(model.steps) if leaky else 1,
        window=p.window,
        memory=rule.memory.mode,
        variant=p.variant,
        gamma=p.gamma,
        sigmas=p.sigmas,
        optim=OptimSpec.of(optimizer),
        reservoir=reservoir,
        layernorm_eps=float(first.layernorm_eps),
        spiking=dyn,
        maps=tuple(layer.geometry for layer in hidden) if conv else (),
        readout_pool=_readout_pool(model.readout) if conv else None,
        features=features,
    )
    reason = TORCH.why_not(spec_facts(spec))
    if reason is not None:
        raise ValueError(f"no fast step: {reason}")
    return spec


def _readout_pool(readout) -> tuple[tuple[int, int, int], int] | None:
    """A :class:`~ibhebb.models.conv.PooledDense` readout's ``(in_shape, pool_in)``; ``None`` if it does not pool."""
    size = getattr(readout, "pool_in", 1)
    return None if size == 1 else (tuple(readout.in_shape), int(size))


COMPILE_MIN_UPDATES = 100_000
"""Below this many updates in a run, ``torch.compile`` costs more than it saves (the C step is always worth it)."""


def worth_compiling(cfg, n_train: int) -> bool:
    """Whether a run is long enough to amortise ``torch.compile`` (a minute or more on a CPU)."""
    steps = cfg.model.steps if cfg.model.kind in ("lif-mlp", "spiking-mlp") else 1
    return cfg.epochs * n_train * steps >= COMPILE_MIN_UPDATES


def engine_mode(engine: str) -> str:
    """The :class:`OnlineEngine` mode of a config's ``engine`` value (not ``rule``, which skips the engine)."""
    return {"auto": "auto", "fast": "auto", "native": "native", "compile": "compile"}[engine]


def make_engine(model, rule, optimizer, *, mode: str = "auto", **kwargs) -> OnlineEngine:
    """An :class:`OnlineEngine` for a built model, rule and optimiser (``ValueError`` if it has none)."""
    return OnlineEngine(step_spec(model, rule, optimizer), model, rule.memory, optimizer, mode=mode, **kwargs)


__all__ = [
    "COMPILE_MIN_UPDATES", "ENGINES", "ENGINE_ALIASES", "EngineState", "MODES", "OnlineEngine", "StepSpec", "bind",
    "canonical_engine", "chunk_step_", "engine_mode", "fill_step_", "leaky_update_", "make_engine", "sample_step_",
    "spiking_why_not", "step_spec", "unbind", "unsupported", "worth_compiling",
]
