"""Run configuration: TOML files, ``key=value`` overrides, validation before training.

A config is a TOML file whose top-level keys are ``seeds`` (the number of
replicas ``R`` trained at once), ``epochs``, ``seed``, ``device``, ``dtype``,
and the tables ``[data]``, ``[model]``, ``[rule]``, ``[optim]``, ``[eval]``.
Any key can be overridden on the command line as ``section.key=value`` (the
value is parsed as TOML, falling back to a plain string).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError


@dataclass
class DataConfig:
    name: str = "mnist"
    root: str = ""
    n_train: int = 0
    """Use only the first ``n_train`` training samples (0: all; for linear/xor: how many to draw)."""
    n_test: int = 0
    validation: float = 0.0
    """Fraction of the training samples (after ``n_train``) held out as a validation set, evaluated each epoch
    beside the test set (seed 001 tuned on 10 %); the summary names the epoch of best validation accuracy."""
    augment: bool = False
    """Random crop (zero padding 2, i.e. the mean colour) and horizontal flip of training images, redrawn each epoch."""


@dataclass
class ModelConfig:
    kind: str = "mlp"
    """``mlp`` (static units), ``lif-mlp`` (rate leaky-integrate units), ``spiking-mlp`` (LIF spiking units),
    ``spiking-cnn`` (3×3 conv layers of LIF units, ``channels``), ..."""
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    layernorm: bool = True
    bias: bool = True
    layernorm_eps: float = 1e-5
    """ε of the parameter-free LayerNorm (the authors' flax code: 1e-6)."""
    init: str = "uniform"
    """``uniform`` (weights and biases ``U(±1/√fan_in)``) or ``lecun-normal`` (truncated normal weights of variance
    ``1/fan_in``, zero biases: the authors' flax code); ``mlp``, ``lif-mlp`` and ``cnn``."""
    tau_m: float = 5.0
    dt: float = 1.0
    steps: int = 20
    """``T``: Euler steps each sample is presented for (leaky networks)."""
    channels: list[int] = field(default_factory=lambda: [128, 256])
    """``cnn``: output channels of each 3×3 convolution (each followed by 2×2 average pooling); ``spiking-cnn``: the
    same, the pooling of each layer's spike maps at the start of the next layer (or the readout)."""
    z_after_pool: bool = True
    """``cnn``: a conv layer's ``z`` (kernel, memory) is its pooled map (true) or the map before pooling (false)."""
    width: int = 1
    """``vgg``: 1 or 2 (2×: every convolution's channels doubled; seed 001 Table 2)."""
    scale: float = 1.0
    """``vgg``: every width (convolutions and the fc layer) times this (e.g. 0.125 for CPU runs and tests)."""
    batchnorm: bool = False
    """``vgg``: batch normalisation of every hidden layer's preactivation (the AdamW rows of Table 2)."""
    negative_slope: float = 0.1
    """LeakyReLU slope of ``phsic-mlp`` (and of ``vgg`` with ``activation = "leaky-relu"``)."""
    dropout: float = 0.0
    """Dropout after each hidden layer of ``phsic-mlp`` and ``vgg``."""
    divisive_norm: bool = False
    """``phsic-mlp``, ``vgg``: the next layer receives ``z̃ / u^p`` (seed 001 eq 17; ``vgg``: over channel groups)."""
    groups: int = 32
    """``c``: groups of neurons per layer (divisive normalisation, grouped kernels)."""
    group_delta: float = 1.0
    """``δ``: offset of the smoothed group variance (seed 001 eq 13)."""
    group_p: float = 0.2
    """``p``: divisive exponent; the grouped kernel compares ``u^{1-p}`` (eqs 14, 17)."""
    threshold: float = 1.0
    """``spiking-mlp``: ``ϑ``, the firing threshold of the potential (``tau_m`` is its ``tau_mem``)."""
    reset: str = "zero"
    """``spiking-mlp``: after a spike the potential is reset to ``zero`` or by ``subtract``-ing the threshold."""
    refractory: int = 0
    """``spiking-mlp``: steps after a spike during which a neuron neither integrates nor fires."""
    firing: str = "surrogate"
    """``spiking-mlp``: ``surrogate`` (deterministic threshold, β through a surrogate of its derivative) or
    ``escape`` (fires with probability ``f(v - ϑ)``, β through ``f'``)."""
    surrogate: str = "fast-sigmoid"
    """``firing = "surrogate"``: ``fast-sigmoid`` or ``arctan``."""
    surrogate_slope: float = 5.0
    """``k`` of the surrogate."""
    escape: str = "sigmoid"
    """``firing = "escape"``: the escape function, ``sigmoid`` or ``exp``."""
    escape_width: float = 0.25
    """``δ`` of the escape function."""
    encoding: str = "current"
    """``spiking-mlp``: the input as ``current``-s, or as ``bernoulli`` or ``poisson`` spike trains."""
    input_scale: float = 1.0
    """Spike encodings: probability ``min(1, scale |x + offset|)`` (bernoulli) or rate ``scale |x + offset|`` (poisson)
    of an input spike."""
    input_offset: float = 0.0
    """Spike encodings: added to the input before it is encoded (1 with ``input_scale = 0.5``: images in [-1, 1] back to
    pixel intensities in [0, 1], sparse spikes)."""
    spike_z: str = "count"
    """``spiking-mlp``: what the kernels and the memory see, the spike ``count`` per step or a synaptic ``trace``."""
    tau_syn: float = 5.0
    """``spike_z = "trace"``: the trace's time constant."""


@dataclass
class RuleConfig:
    name: str = "biohsic"
    variant: str = "paper"
    memory: str = "buffer"
    reservoir: str = ""
    """``memory = "reservoir"``: the file written by ``ibhebb reservoir pretrain``."""
    window: int = 8
    """``N``: samples in the working memory's window, the current one included."""
    gamma: float = 2.0
    sigmas: list[float] = field(default_factory=lambda: [0.5, 0.1, 1.0])
    """``[σ_x, σ_y, σ_z]`` (the pHSIC rules use ``σ_z`` alone)."""
    kernel: str = "gaussian"
    """pHSIC layer kernel: ``gaussian``, ``cossim`` or ``linear``."""
    estimator: str = "phsic"
    """pHSIC (batch form): the layer objective in ``phsic`` (eq 9) or in the ``biased`` HSIC estimator (eq 5)."""
    feedback_scale: str = "mean-abs"
    """``sign-symmetry``: feedback ``sign(W) · mean|W|`` (``mean-abs``) or plain ``sign(W)`` (``none``, the authors' code)."""
    head_features: int = 2048
    """``layer-classifier(-fa)`` on conv layers: the map is average-pooled by 2, 4, … until at most this many features
    remain, then classified linearly (Nøkland & Eidnes' projection head)."""
    grouped: bool = False
    """pHSIC: put the layer kernel on the group code ``v`` (eq 14) instead of ``z``."""
    form: str = "batch"
    """pHSIC: ``batch`` (eq 10 on minibatches), ``pair`` (eqs 18–19), ``running-mean`` (eq 20; eq 21 if grouped)
    or ``split`` (eq 22, grouped only), online."""
    features: int = 256
    """``memory = "features"``: random Fourier features per kernel (even)."""
    trace_tau: float = 0.0
    """``memory = "features"``: time constant of the traces in samples (0: fitted to ``window``)."""
    trace_stages: int = 2
    """``memory = "features"``: leaky integrators in each trace's cascade (their sum is fitted to the window)."""
    feature_seed: int = 0
    """``memory = "features"``: seed of the fixed random feature weights."""
    feature_draw: str = "orthogonal"
    """``memory = "features"``: the feature weights' draw, ``orthogonal`` (blocks of orthogonal frequencies) or
    ``independent``."""
    memory_check: bool = False
    """``memory = "features"``: also keep a buffer, only to log ξ's correlation with the true ξ each epoch."""
    reset_each_epoch: bool = False
    """``biohsic``: empty the working memory at the start of every epoch (the authors' code); by default it runs on."""
    mean_rate: float = 0.01
    """Online pHSIC: rate of the running means of kernels and activity."""


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    momentum: float = 0.0
    weight_decay: float = 1e-4
    batch_size: int = 6
    """Minibatch size of batch rules (backprop, last-layer); online rules see one sample at a time."""
    readout_lr: float = 0.0
    """Learning rate of the readout (0: ``lr``)."""
    readout_weight_decay: float = -1.0
    """Weight decay of the readout (negative: ``weight_decay``)."""
    milestones: list[int] = field(default_factory=list)
    """Epochs after which every learning rate is multiplied by ``gamma_lr``."""
    gamma_lr: float = 1.0


@dataclass
class EvalConfig:
    batch_size: int = 2000
    hsic_samples: int = 256
    """Size of the fixed held-out batch on which each layer's bottleneck loss is logged."""
    train_samples: int = 10000
    """Training samples on which train accuracy is measured after each epoch (0: all)."""
    firing_samples: int = 2000
    """A spiking network's firing statistics (rate per layer, spikes per sample, silent and always-on neurons, the
    share of binary spike counts) after each epoch,
    on this many test samples (0: off)."""


@dataclass
class Config:
    seeds: int = 1
    epochs: int = 1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    """Torch CPU threads (0: torch's default)."""
    engine: str = "auto"
    """Online training loop: ``auto`` (the fast engine of :mod:`ibhebb.engine` where it can run, else the rule's own
    loop), ``fast`` (the engine or an error), ``native`` (its C step, CPU), ``compile`` (its ``torch.compile`` step),
    ``rule`` (the rule's own loop; ``eager`` is its old name)."""
    engine_chunk: int = 0
    """Samples per call of the fast engine's C or compiled step (0: its own choice, see :mod:`ibhebb.engine.runner`)."""
    log: list[str] = field(default_factory=list)
    """Where metrics go besides ``metrics.jsonl``: ``"tensorboard"``, ``"wandb"`` (offline); see :mod:`ibhebb.train.loggers`."""
    on_divergence: str = "stop"
    """Non-finite weights: ``stop`` the run (the last good checkpoint stays), or ``drop-seeds``: leave the diverged
    replicas out and go on with the others (accuracies are then means over the surviving seeds)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _unknown(key: str, options: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], options, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; valid keys here: {', '.join(options)}")


def _fill(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown(full, names)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} must be a table of keys, got {value!r}")
            _fill(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_value(text: str) -> Any:
    """A command-line value as TOML (``3``, ``1e-4``, ``[128, 64]``, ``true``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["rule.window=8", "seeds=3"]`` → nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = parse_value(text.strip())
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Read a TOML (or the JSON a run directory holds), apply overrides, validate."""
    cfg = Config()
    fill_from(cfg, path, overrides)
    validate(cfg)
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML config (or of the JSON a run directory holds), given by path or preset name.

    A one-line error if unreadable.
    """
    from .presets import resolve_config

    path = resolve_config(path)  # a path, or the name of a packaged preset
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a config: it holds a JSON {type(data).__name__}, not a table of keys")
    return data


def fill_from(cfg: Any, path: str | Path | None, overrides: list[str] | dict | None) -> None:
    """Fill a config dataclass from a file, then from overrides (``key=value`` strings or a nested dict)."""
    if path is not None:
        _fill(cfg, read_config_file(path))
    if overrides:
        _fill(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)


def check_device_and_dtype(cfg: Any) -> None:
    """``cfg.dtype`` is float32/float64 and ``cfg.device`` is the CPU or an available CUDA device."""
    require_choice(cfg.dtype, ("float32", "float64"), "dtype")
    require(cfg.device == "cpu" or cfg.device.startswith("cuda"), f"device must be 'cpu' or 'cuda[:i]', got {cfg.device!r}")
    if cfg.device.startswith("cuda"):
        import torch

        require(torch.cuda.is_available(), f"device {cfg.device!r} asked for, but CUDA is not available here")


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def require_choice(value: str, options, key: str) -> None:
    require(value in options, f"{key} = {value!r} is not one of: {', '.join(options)}")


CHECKS: list[Callable[[Any], None]] = []
"""The checks that the rules, models, memories, data sets and the engine register for their own config keys."""


def register_check(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """Add ``check(cfg)`` (raising :class:`ConfigError`) to what :func:`validate` runs; usable as a decorator."""
    CHECKS.append(check)
    return check


def validate(cfg: Config) -> None:
    """Refuse, with one clear message, anything that cannot train.

    The keys' ranges are checked here; which names exist (rules, models, memories, data sets, engines) and what
    fits together is checked by the owners of those names, through :func:`register_check`.
    """
    require(cfg.seeds >= 1, f"seeds must be >= 1, got {cfg.seeds}")
    require(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    require(cfg.threads >= 0, f"threads must be >= 0 (0: torch's default), got {cfg.threads}")
    require_choice(cfg.on_divergence, ("stop", "drop-seeds"), "on_divergence")
    check_device_and_dtype(cfg)
    require(cfg.engine_chunk >= 0, "engine_chunk must be >= 0 (0: the engine's own choice)")
    require(cfg.data.n_train >= 0 and cfg.data.n_test >= 0, "data.n_train and data.n_test must be >= 0")
    require(0 <= cfg.data.validation < 1, f"data.validation must be a fraction in [0, 1), got {cfg.data.validation}")
    m = cfg.model
    require(all(h >= 1 for h in m.hidden), f"model.hidden sizes must be positive, got {m.hidden}")
    require(m.tau_m > 0 and m.dt > 0, "model.tau_m and model.dt must be > 0")
    require(m.dt <= m.tau_m, f"model.dt ({m.dt}) must not exceed model.tau_m ({m.tau_m}): the Euler step would overshoot")
    require(m.steps >= 1, f"model.steps must be >= 1, got {m.steps}")
    require(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    require(m.groups >= 1 and m.group_delta >= 0, "model.groups must be >= 1 and model.group_delta >= 0")
    require(0 <= m.group_p < 1, f"model.group_p must be in [0, 1), got {m.group_p}")
    r = cfg.rule
    require(r.window >= 2, f"rule.window (N) must be >= 2, got {r.window}")
    require(len(r.sigmas) == 3, f"rule.sigmas must be [sigma_x, sigma_y, sigma_z], got {r.sigmas}")
    require(all(s > 0 and math.isfinite(s) for s in r.sigmas), f"rule.sigmas must all be > 0, got {r.sigmas}")
    require(r.gamma >= 0 and math.isfinite(r.gamma), f"rule.gamma must be >= 0, got {r.gamma}")
    require(0 < r.mean_rate <= 1, f"rule.mean_rate must be in (0, 1], got {r.mean_rate}")
    o = cfg.optim
    require_choice(o.name, ("adamw", "adam", "sgd"), "optim.name")
    require(o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be > 0, got {o.lr}")
    require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    require(o.weight_decay >= 0 and o.momentum >= 0, "optim.weight_decay and optim.momentum must be >= 0")
    require(o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}")
    require(o.readout_lr >= 0 and o.gamma_lr > 0, "optim.readout_lr must be >= 0 and optim.gamma_lr > 0")
    require(all(e >= 1 for e in o.milestones), f"optim.milestones must be epochs >= 1, got {o.milestones}")
    e = cfg.eval
    require(e.batch_size >= 1, "eval.batch_size must be >= 1")
    require(e.hsic_samples >= 2 or e.hsic_samples == 0, "eval.hsic_samples must be 0 (off) or >= 2")
    require(e.firing_samples >= 0, f"eval.firing_samples must be >= 0 (0: off), got {e.firing_samples}")
    for check in CHECKS:
        check(cfg)
