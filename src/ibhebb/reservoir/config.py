"""Configs of the reservoir experiments: the Fig 3 sweep and task-free pre-training.

TOML with the tables ``[reservoir]`` and ``[readout]`` shared by both, then
``[task]`` (Fig 3) or ``[target]`` + ``[stream]`` (pre-training); overrides
``section.key=value`` as for ``ibhebb train``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..config import check_device_and_dtype, fill_from, require, require_choice
from ..functional.traces import FEATURE_DRAWS


@dataclass
class ReservoirParams:
    units: int = 2000
    lr: float = 0.2
    """Leak ``Δt/τ_r`` (1 ms / 5 ms)."""
    sr: float = 1.2
    """Gain ``λ`` on ``W_r`` (≈ its spectral radius)."""
    connectivity: float = 0.1
    input_scaling: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Scales of the blocks ``[x, y, z]`` of ``r_i``; each block's columns get ``scale / sqrt(block dim)``."""
    feedback_scaling: float = 1.0
    feedback: bool = True
    noise_hidden: float = 0.0
    noise_out: float = 0.0
    steps: int = 20
    """``T``: Euler steps each sample is held (the reservoir's own T)."""
    seed: int = 0


@dataclass
class ReadoutParams:
    learner: str = "rls"
    """``lms`` or ``rls`` (pre-training); the Fig 3 sweep uses ``learners``."""
    learners: list[str] = field(default_factory=lambda: ["lms", "rls"])
    lms_lr: float = 5e-4
    alpha: float = 1.0
    """RLS: ``P_0 = I/alpha``."""
    forgetting: float = 1.0
    every: int = 1
    target_scale: float = 0.0
    """The readout learns ``ξ · target_scale``; 0: ``1 / std`` of the training targets."""

    def options(self, learner: str) -> dict:
        if learner == "lms":
            return {"lr": self.lms_lr, "every": self.every}
        return {"alpha": self.alpha, "forgetting": self.forgetting, "every": self.every}


@dataclass
class TaskParams:
    data: str = "mnist"
    samples: int = 100
    """Training samples: the first ``samples`` test images; held-out: the next ``samples``."""
    epochs: int = 10
    z_dim: int = 10
    window: int = 10
    gamma: float = 2.0
    sigmas: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    variant: str = "paper"


@dataclass
class Fig3Config:
    sizes: list[int] = field(default_factory=lambda: [500, 1000, 2000, 4000])
    seeds: int = 1
    """Independent reservoirs per size (run as one bank)."""
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    features: list[int] = field(default_factory=list)
    """Also score the ``features`` working memory with these numbers of random features ``D`` on the same stream."""
    trace_stages: int = 2
    """Leaky integrators per trace of that memory."""
    feature_draw: str = "orthogonal"
    """How that memory's random feature weights are drawn: ``orthogonal`` or ``independent``."""
    reservoir: ReservoirParams = field(default_factory=ReservoirParams)
    readout: ReadoutParams = field(default_factory=ReadoutParams)
    task: TaskParams = field(default_factory=TaskParams)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TargetParams:
    """What the pre-trained reservoirs will serve: the network's dimensions and the ξ of its rule."""

    x_dim: int = 784
    classes: int = 10
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    window: int = 8
    gamma: float = 2.0
    sigmas: list[float] = field(default_factory=lambda: [0.5, 0.1, 1.0])
    variant: str = "paper"


@dataclass
class StreamParams:
    """The task-free training stream: ``x`` random or from another data set, ``y`` random one-hot, ``z`` random."""

    x: str = "uniform"
    """``uniform`` (in ``x_range``), ``normal``, or a data set name (its training images, flattened)."""
    x_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    z: str = "normal"
    """``normal`` (N(0,1), like a LayerNorm output) or ``uniform`` (U(0,1))."""
    samples: int = 2000
    test_samples: int = 200
    seed: int = 1


@dataclass
class PretrainConfig:
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    reservoir: ReservoirParams = field(default_factory=lambda: ReservoirParams(units=1000))
    readout: ReadoutParams = field(default_factory=ReadoutParams)
    target: TargetParams = field(default_factory=TargetParams)
    stream: StreamParams = field(default_factory=StreamParams)

    def to_dict(self) -> dict:
        return asdict(self)


def _validate_common(cfg) -> None:
    from ..functional.signals import VARIANTS

    r, o = cfg.reservoir, cfg.readout
    check_device_and_dtype(cfg)
    require(r.units >= 1, f"reservoir.units must be >= 1, got {r.units}")
    require(0 < r.lr <= 1, f"reservoir.lr (Δt/τ_r) must be in (0, 1], got {r.lr}")
    require(0 < r.connectivity <= 1, f"reservoir.connectivity must be in (0, 1], got {r.connectivity}")
    require(r.sr >= 0 and math.isfinite(r.sr), f"reservoir.sr must be >= 0, got {r.sr}")
    require(len(r.input_scaling) == 3, f"reservoir.input_scaling must be [x, y, z] scales, got {r.input_scaling}")
    require(r.steps >= 1, f"reservoir.steps must be >= 1, got {r.steps}")
    require(r.noise_hidden >= 0 and r.noise_out >= 0, "reservoir.noise_hidden and noise_out must be >= 0")
    for name in [o.learner, *o.learners]:
        require(name in ("lms", "rls"), f"readout learner {name!r} is not one of: lms, rls")
    require(o.lms_lr > 0 and o.alpha > 0, "readout.lms_lr and readout.alpha must be > 0")
    require(0 < o.forgetting <= 1, f"readout.forgetting must be in (0, 1], got {o.forgetting}")
    require(o.every >= 1, f"readout.every must be >= 1, got {o.every}")
    require(o.target_scale >= 0, f"readout.target_scale must be >= 0 (0: automatic), got {o.target_scale}")
    return VARIANTS


def _validate_xi(t, where: str, variants) -> None:
    require(t.window >= 2, f"{where}.window (N) must be >= 2, got {t.window}")
    require(len(t.sigmas) == 3 and all(s > 0 for s in t.sigmas), f"{where}.sigmas must be three numbers > 0, got {t.sigmas}")
    require(t.variant in variants, f"{where}.variant = {t.variant!r} is not one of: {', '.join(variants)}")


def load(cls, path, overrides=None):
    """Read a TOML into ``cls`` (:class:`Fig3Config` or :class:`PretrainConfig`), apply overrides, validate."""
    cfg = cls()
    fill_from(cfg, path, overrides)
    variants = _validate_common(cfg)
    if isinstance(cfg, Fig3Config):
        t = cfg.task
        require(bool(cfg.sizes) and all(s >= 1 for s in cfg.sizes), f"sizes must be positive, got {cfg.sizes}")
        require(cfg.seeds >= 1, f"seeds must be >= 1, got {cfg.seeds}")
        require(all(d >= 2 and d % 2 == 0 for d in cfg.features), f"features must be even and >= 2, got {cfg.features}")
        require(cfg.trace_stages in (1, 2, 3), f"trace_stages must be 1, 2 or 3, got {cfg.trace_stages}")
        require_choice(cfg.feature_draw, FEATURE_DRAWS, "feature_draw")
        require(not cfg.features or t.variant in ("paper", "first-term"),
                f"features: the trace memory computes the paper and first-term ξ, not {t.variant!r}")
        require(t.samples >= t.window, f"task.samples must be >= task.window, got {t.samples}")
        require(t.epochs >= 1 and t.z_dim >= 1, "task.epochs and task.z_dim must be >= 1")
        _validate_xi(t, "task", variants)
    else:
        t, s = cfg.target, cfg.stream
        require(t.x_dim >= 1 and t.classes >= 2, "target.x_dim must be >= 1 and target.classes >= 2")
        require(bool(t.hidden) and all(h >= 1 for h in t.hidden), f"target.hidden must be positive sizes, got {t.hidden}")
        _validate_xi(t, "target", variants)
        require(s.z in ("normal", "uniform"), f"stream.z = {s.z!r} is not one of: normal, uniform")
        require(len(s.x_range) == 2 and s.x_range[0] < s.x_range[1], f"stream.x_range must be [low, high], got {s.x_range}")
        require(s.samples > t.window and s.test_samples > t.window, "stream.samples and test_samples must exceed target.window")
    return cfg
