"""What each backend of the online step can run: one table per backend, read by config validation and the engine alike.

A backend is asked about a set of *facts* (the rule, the model kind, the
memory, the optimiser, the activation, the ξ variant, the number of hidden
layers, the device and the dtype), taken either from a config
(:func:`config_facts`) or from a built model, rule and optimiser
(:func:`spec_facts`), so a config is refused for the same reason that would
make the engine fall back at run time.

``torch``
    The step written with torch ops (:mod:`.step`): eager, under
    ``torch.compile`` and in CUDA graphs.
``native``
    The C step (``native/step.c``): what its source declares it implements
    (its ``ibhebb:implements`` lines), on the CPU, in float32 or float64, with
    at most :data:`~.cstep.MAX_LAYERS` layers. A ξ variant or an activation
    that exists only in Python is therefore refused with a reason, and the
    engine falls back to the torch step.

Examples
--------
>>> from ibhebb.engine.capability import NATIVE
>>> NATIVE.why_not({"rule": "biohsic", "model": "mlp", "memory": "buffer", "optimizer": "adamw",
...                 "activation": "relu", "variant": "paper", "hidden": 2, "device": "cpu", "dtype": "float64"}) is None
True
>>> NATIVE.why_not({"device": "cuda"})
'the C step runs on the CPU only'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..functional import layers, optim, signals
from ..functional import spiking as spk
from . import cstep
from .step import MODELS

@dataclass(frozen=True)
class Capability:
    """The values of each fact a backend supports, and its limits of size, device and dtype.

    ``choices`` is called at each question, so names added to the core at run time are seen.
    """

    backend: str
    choices: Callable[[], Mapping[str, tuple]]
    max_hidden: int | None = None
    device: str | None = None
    dtypes: tuple[str, ...] | None = None

    def why_not(self, facts: Mapping[str, Any]) -> str | None:
        """Why this backend cannot run a step with these facts (``None`` if it can); unknown facts are not checked."""
        for key, options in self.choices().items():
            value = facts.get(key)
            if value is not None and value not in options:
                if self.backend == "native" and key in cstep.enums():
                    return f"the C step implements no {key} {value!r} (it has {', '.join(options)})"
                return f"{_NAMES.get(key, key)} {value!r} is not one of {', '.join(options)}"
        if self.device is not None and facts.get("device") is not None and not str(facts["device"]).startswith(self.device):
            return f"the C step runs on the {self.device.upper()} only"
        if self.dtypes is not None and facts.get("dtype") is not None and facts["dtype"] not in self.dtypes:
            return f"no C step for {facts['dtype']}"
        if self.max_hidden is not None and facts.get("hidden") is not None and facts["hidden"] > self.max_hidden:
            return f"more than {self.max_hidden} hidden layers"
        return None


_NAMES = {"model": "model.kind", "optimizer": "optimiser", "variant": "ξ variant"}
STEP_RULES = ("biohsic",)
STEP_MODELS = MODELS
CONV_MODELS = ("cnn",)
"""The models whose hidden layers are convolutions: the torch step runs them (its convolutions are torch's), the C step
does not (its source declares no ``model cnn``)."""
STEP_MEMORIES = ("buffer", "recompute", "reservoir", "features")


def _torch() -> dict[str, tuple]:
    return {"rule": STEP_RULES, "model": STEP_MODELS, "memory": STEP_MEMORIES, "optimizer": optim.OPTIMIZERS,
            "activation": layers.ACTIVATIONS, "variant": signals.VARIANTS, "firing": spk.FIRINGS,
            "surrogate": spk.SURROGATES, "escape": spk.ESCAPES, "encoding": spk.ENCODINGS, "spike_z": spk.SPIKE_Z,
            "reset": spk.RESETS}


def _native() -> dict[str, tuple]:
    implements = cstep.implements()
    return {**_torch(), **{kind: tuple(v for v in _torch()[kind] if v in implements[kind]) for kind in implements}}


TORCH = Capability("torch", _torch)
NATIVE = Capability("native", _native, max_hidden=cstep.MAX_LAYERS - 1, device="cpu", dtypes=("float32", "float64"))
BACKENDS = {"torch": TORCH, "native": NATIVE}


def config_facts(cfg) -> dict[str, Any]:
    """The facts of a config (see the module docstring)."""
    m = cfg.model
    facts = {"rule": cfg.rule.name, "model": m.kind, "memory": cfg.rule.memory, "optimizer": cfg.optim.name,
             "activation": m.activation, "variant": cfg.rule.variant, "hidden": len(m.hidden),
             "device": cfg.device, "dtype": cfg.dtype}
    if m.kind == "spiking-mlp":
        facts.update(activation=None, firing=m.firing, surrogate=m.surrogate, escape=m.escape, encoding=m.encoding,
                     spike_z=m.spike_z, reset=m.reset)
    return facts


def spec_facts(spec) -> dict[str, Any]:
    """The facts of a :class:`~.step.StepSpec` (a built model, rule and optimiser)."""
    return {"rule": "biohsic", "memory": spec.memory, "hidden": spec.n_hidden, **cstep.spec_choices(spec)}
