"""The online step in C (``native/step.c``), built with the system's C compiler on first use.

:class:`NativeStep` trains an :class:`~.step.EngineState` on a chunk of
samples exactly as ``for j in order: sample_step_(spec, st, x[j], y[j])``
would, in one call of a small C library per chunk and thread, with no Python
per sample. The replicas of a chunk are split between threads; each thread
trains its replicas one after the other over the whole chunk, so a replica's
weights and moments stay in cache while it learns from the chunk.

The library is compiled once per machine, dtype and source version with
``cc -O3 -march=native`` into ``$IBHEBB_CACHE/native`` (default
``~/.cache/ibhebb/native``); :func:`library` returns ``None`` (and
:func:`unavailable` says why) when there is no working compiler, so callers
fall back to :mod:`torch.compile` or the eager step.

Examples
--------
>>> import torch
>>> from ibhebb.engine.cstep import library, unavailable
>>> lib = library(torch.float32)
>>> (lib is None) == (unavailable(torch.float32) is not None)
True
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ..functional import layers, optim, signals
from ..functional import spiking as spk
from .step import MODELS, EngineState, StepSpec, step_model

MAX_LAYERS = 8
"""Hidden layers plus the readout that the C step supports (``MAXL`` in the generated header)."""

SOURCE = Path(__file__).with_name("native") / "step.c"
_REAL = {torch.float32: "float", torch.float64: "double"}

def enums() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each enum of the C step: its C prefix and the Python names behind its values, in order (read at each call)."""
    return {"activation": ("ACT", layers.ACTIVATIONS), "variant": ("XI", signals.VARIANTS), "optimizer": ("OPT", optim.OPTIMIZERS),
            "model": ("MODEL", MODELS), "firing": ("FIRE", spk.FIRINGS), "surrogate": ("SURR", spk.SURROGATES),
            "escape": ("ESC", spk.ESCAPES), "encoding": ("ENC", spk.ENCODINGS), "spike_z": ("SPZ", spk.SPIKE_Z),
            "reset": ("RESET", spk.RESETS)}


def spec_choices(spec: StepSpec) -> dict[str, str]:
    """The value of each :func:`enums` kind in a spec (the spiking kinds only for a spiking network)."""
    out = {"activation": spec.activation, "variant": spec.variant, "optimizer": spec.optim.name, "model": step_model(spec)}
    dyn = spec.spiking
    if dyn is not None:
        out.update(firing=dyn.firing, surrogate=dyn.surrogate, escape=dyn.escape, encoding=dyn.encoding,
                   spike_z=dyn.spike_z, reset=dyn.neuron.reset)
    return out

_L, _P = MAX_LAYERS, 2 * MAX_LAYERS
_FIELDS = [  # (name, C type, array length or 0): the one definition of the C step's Problem
    ("n_hidden", "int64_t", 0), ("replicas", "int64_t", 0), ("window", "int64_t", 0), ("steps", "int64_t", 0),
    ("n_samples", "int64_t", 0), ("dims", "int64_t", _L + 1),  # d_x, d_1 .. d_L, C
    ("activation", "int64_t", 0), ("layernorm", "int64_t", 0), ("has_bias", "int64_t", 0), ("variant", "int64_t", 0),
    ("recompute", "int64_t", 0), ("optim", "int64_t", 0),
    ("leak", "double", 0),  # dt / tau_m of a leaky network, 0 for the static one
    ("ln_eps", "double", 0),  # epsilon of the parameter-free LayerNorm
    ("gamma", "double", 0), ("sigma_x", "double", 0), ("sigma_y", "double", 0), ("sigma_z", "double", 0),
    ("beta1", "double", 0), ("beta2", "double", 0), ("eps", "double", 0), ("momentum", "double", 0),
    ("lr", "double", _P), ("wd", "double", _P),  # per parameter, params() order
    ("step", "double", 0), ("power1", "double", 0), ("power2", "double", 0),  # in and out
    ("weight", "real *", _L), ("bias", "real *", _L), ("moment1", "real *", _P), ("moment2", "real *", _P),
    ("past_x", "real *", 0), ("past_y", "real *", 0), ("past_z", "real *", _L), ("kx", "real *", 0), ("ky", "real *", 0),
    ("x_all", "const real *", 0), ("y_all", "const real *", 0), ("order", "const int64_t *", 0), ("work", "void *", 0),
    # the reservoir memory (res_units > 0): a bank of L reservoirs, weights (L, n, .) shared by the replicas
    ("res_units", "int64_t", 0), ("res_in", "int64_t", 0), ("res_out", "int64_t", 0), ("res_steps", "int64_t", 0),
    ("res_feedback", "int64_t", 0), ("res_leak", "double", 0), ("res_gain", "double", 0),
    ("res_w_in_t", "const real *", 0),  # W_in transposed: (L, in, n)
    ("res_w_fb", "const real *", 0), ("res_readout", "const real *", 0), ("res_scale", "const real *", 0),
    ("res_u", "real *", 0), ("res_r", "real *", 0), ("res_ro", "real *", 0),  # (L, R, n), (L, R, n), (L, R, m): the state
    ("res_rec_start", "const int64_t *", 0),  # W_r in compressed rows: (L, n+1) offsets, column indices and
    ("res_rec_col", "const int32_t *", 0), ("res_rec_val", "const real *", 0),  # values, rows of all L layers in turn
    ("parts", "int64_t", 0),  # threads that share one replica (ibhebb_part), else 1
    # a spiking network (spiking = 1): LIF hidden layers (leak = dt / tau_mem), the enums of spec_choices
    ("spiking", "int64_t", 0), ("spk_firing", "int64_t", 0), ("spk_surrogate", "int64_t", 0), ("spk_escape", "int64_t", 0),
    ("spk_reset", "int64_t", 0), ("spk_readout", "int64_t", 0), ("spk_refractory", "int64_t", 0),
    ("spk_threshold", "double", 0), ("spk_slope", "double", 0), ("spk_width", "double", 0),  # surrogate slope, escape width
    ("spk_kappa", "double", 0),  # dt / tau_syn of the trace readout
    ("spk_in", "int64_t", 0),  # d_x when each noise row starts with the input's uniforms (an encoding), else 0
    ("spk_stride", "int64_t", 0),  # length of a noise row: the input's uniforms, then each layer's (escape noise)
    ("spk_noise", "const real *", 0),  # (R, K, T, spk_stride) for the chunk, or NULL when nothing is random
    ("spk_prob", "const real *", 0),  # (K, d_x): each chunk sample's signed probability of an input spike (an encoding)
    # the features memory (fm_features = D > 0): S leaky stages of random-feature traces, functional/traces.py
    ("fm_features", "int64_t", 0), ("fm_stages", "int64_t", 0), ("fm_lam", "double", 0), ("fm_coef", "double", 3),
    ("fm_omega_t", "const real *", _L),  # [0]: Ω_x (d_x, D/2) as it is (summed over the nonzero inputs); [1 + l]: Ω_z of
    # hidden layer l transposed, (D/2, d_l)
    ("fm_t1", "real *", 0), ("fm_tx", "real *", 0), ("fm_ty", "real *", 0),  # (S,), (S, D), (S, C+1): shared, in place
    ("fm_fast", "real *", _L),  # (S, R, D, 2 d_l + 2) per hidden layer, in place
]
_CTYPES = {"int64_t": ctypes.c_int64, "double": ctypes.c_double}


class _Problem(ctypes.Structure):
    _fields_ = [(name, (_CTYPES.get(ct, ctypes.c_void_p) * n) if n else _CTYPES.get(ct, ctypes.c_void_p)) for name, ct, n in _FIELDS]


def _c_name(prefix: str, name: str) -> str:
    return f"{prefix}_{name.upper().replace('-', '_')}"


def abi_header() -> str:
    """The C declarations generated from this module: ``MAXL``, one enum per :func:`enums`, ``Problem``."""
    lines = ["/* generated by ibhebb.engine.cstep.abi_header(): do not edit */", "#pragma once",
             f"#define MAXL {MAX_LAYERS}"]
    for prefix, names in enums().values():
        lines.append("enum { " + ", ".join(f"{_c_name(prefix, n)} = {i}" for i, n in enumerate(names)) + " };")
    lines.append("typedef struct {")
    for name, ct, n in _FIELDS:
        lines.append(f"    {ct}{'' if ct.endswith('*') else ' '}{name}{f'[{n}]' if n else ''};")
    lines.append("} Problem;")
    return "\n".join(lines) + "\n"


def implements() -> dict[str, tuple[str, ...]]:
    """What ``step.c`` declares it implements of each enum (its ``ibhebb:implements KIND NAME…`` lines)."""
    if not _IMPLEMENTS:
        found = {kind: () for kind in enums()}
        for line in SOURCE.read_text().splitlines():
            if "ibhebb:implements" in line:
                kind, *names = line.split("ibhebb:implements", 1)[1].replace("*/", "").split()
                found[kind] = tuple(names)
        _IMPLEMENTS.update(found)
    return dict(_IMPLEMENTS)


_IMPLEMENTS: dict[str, tuple[str, ...]] = {}


def _values(spec: StepSpec) -> dict[str, int]:
    """The enum values of a spec, or ``ValueError`` naming what the C step does not implement."""
    out, names, done = {}, enums(), implements()
    for kind, value in spec_choices(spec).items():
        if value not in done[kind] or value not in names[kind][1]:
            raise ValueError(f"the C step implements no {kind} {value!r} (it has {', '.join(done[kind])})")
        out[kind] = names[kind][1].index(value)
    return out


_LIBS: dict = {}
_ERRORS: dict = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("IBHEBB_CACHE")
    return Path(root) / "native" if root else Path.home() / ".cache" / "ibhebb" / "native"


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (``/proc/cpuinfo`` where there is one)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def _compile(real: str) -> Path:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc!r} not found; set CC)")
    common = ["-O3", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC", f"-DREAL={real}"]
    header = abi_header()
    source, machine, errors = SOURCE.read_bytes() + header.encode(), [platform.machine(), _cpu_id()], []
    for arch in (["-march=native"], []):  # some compilers (older clang on arm64) refuse -march=native
        flags = arch + common
        key = hashlib.sha256(source + " ".join([cc, *flags, *machine]).encode()).hexdigest()[:16]
        out = cache_dir() / f"ibhebb_step_{real}_{key}.so"
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        include = tempfile.mkdtemp(dir=out.parent)
        Path(include, "ibhebb_abi.h").write_text(header)
        try:
            res = subprocess.run([cc, *flags, f"-I{include}", str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(tmp, out)  # atomic: concurrent processes (a sweep) may compile at once
                return out
            errors.append((res.stderr or res.stdout).strip()[:300])
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            shutil.rmtree(include, ignore_errors=True)
    raise RuntimeError(f"{cc} failed: {errors[-1]}")


def library(dtype: torch.dtype):
    """The C step for ``dtype`` (float32 or float64) as a ``ctypes`` library, or ``None`` if it cannot be built."""
    if dtype not in _REAL:
        return None
    with _LOCK:
        if dtype in _LIBS or dtype in _ERRORS:
            return _LIBS.get(dtype)
        try:
            lib = ctypes.CDLL(str(_compile(_REAL[dtype])))
            for name in ("ibhebb_begin", "ibhebb_end"):
                getattr(lib, name).argtypes = [ctypes.POINTER(_Problem)]
                getattr(lib, name).restype = ctypes.c_int
            lib.ibhebb_replicas.argtypes = [ctypes.POINTER(_Problem), ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            lib.ibhebb_replicas.restype = ctypes.c_int
            lib.ibhebb_part.argtypes = [ctypes.POINTER(_Problem), ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            lib.ibhebb_part.restype = ctypes.c_int
            lib.ibhebb_problem_size.restype = lib.ibhebb_real_size.restype = ctypes.c_int64
            lib.ibhebb_fp_mode.restype = lib.ibhebb_flushes.restype = ctypes.c_int64
            if (lib.ibhebb_problem_size(), lib.ibhebb_real_size()) != (ctypes.sizeof(_Problem), torch.finfo(dtype).bits // 8):
                raise RuntimeError("the compiled step does not match this module")
            _LIBS[dtype] = lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _ERRORS[dtype] = str(e) or type(e).__name__
        return _LIBS.get(dtype)


def unavailable(dtype: torch.dtype) -> str | None:
    """Why the C step cannot run in ``dtype`` here (``None`` if it can)."""
    if dtype not in _REAL:
        return f"no C step for {dtype}"
    library(dtype)
    return _ERRORS.get(dtype)


def unsupported(spec: StepSpec, st: EngineState) -> str | None:
    """Why :class:`NativeStep` cannot train this state (``None`` if it can)."""
    if spec.n_hidden + 1 > MAX_LAYERS:  # also in capability.NATIVE; the struct's arrays cannot hold more
        return f"more than {MAX_LAYERS - 1} hidden layers"
    try:
        _values(spec)
    except ValueError as e:
        return str(e)
    if st.reservoir is not None and st.reservoir.w_rec.dtype != st.weights[0].dtype:
        return f"a {st.reservoir.w_rec.dtype} reservoir for {st.weights[0].dtype} weights"
    tensors = st.tensors()
    if any(t.device.type != "cpu" for t in tensors):
        return "tensors not on the CPU"
    dtype = st.weights[0].dtype
    res = [] if st.reservoir is None else list(st.reservoir)[:-1]  # its stats are float64
    if st.features is not None:
        if len(st.features.t1) > 3:
            return "more than 3 trace stages"
        res += [*st.features.omega, *st.features[1:4], *st.features.fast]
    if any(t.dtype != dtype for t in [*st.weights, *st.biases, *(m for ms in st.moments for m in ms), st.past_x, st.past_y, *st.past_z,
                                      st.kx, st.ky, *res]):
        return "mixed dtypes"
    if not all(t.is_contiguous() for t in tensors):
        return "non-contiguous tensors"
    return unavailable(dtype)


def compressed_rows(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The nonzero entries of ``(G, n, n)`` matrices, row by row: row offsets ``(G, n+1)`` (int64, into the
    flat arrays of all groups), column indices (int32) and values."""
    flat = w.reshape(-1, w.shape[-1])
    nonzero = flat != 0
    counts = nonzero.sum(1)
    start = torch.zeros(flat.shape[0] + 1, dtype=torch.int64)
    start[1:] = counts.cumsum(0)
    groups, n = w.shape[0], w.shape[1]
    offsets = torch.stack([start[g * n : (g + 1) * n + 1] for g in range(groups)])
    cols = nonzero.nonzero()[:, 1].to(torch.int32).contiguous()
    return offsets.contiguous(), cols, flat[nonzero].contiguous()


def _addr(t: Tensor) -> int:
    return t.data_ptr()


class SplitOrSolo:
    """Whether the next chunk of one replica runs split over ``parts`` threads or on one thread.

    Splitting pays on an idle machine, but its threads meet at barriers three
    times per update, so a thread that another process keeps off its core
    stalls its partners. The choice is the one whose chunks ran faster per
    sample: every ``interval`` chunks one chunk tries the other; the interval
    doubles (up to :attr:`LONGEST`) while the choice holds and drops back to
    :attr:`SHORTEST` when it changes. Both give the same result bit for bit.
    """

    SHORTEST, LONGEST = 4, 64
    MARGIN = 0.95
    """A try must be this much faster per sample than the recent chunks of the current choice to replace it."""

    def __init__(self, parts: int):
        self.parts = parts
        self.current = parts
        self.interval, self._since = self.SHORTEST, 0
        self._recent = {parts: deque(maxlen=5), 1: deque(maxlen=5)}

    def next(self) -> int:
        """Threads for the next chunk."""
        if self._since >= self.interval and self._recent[self.current]:
            return 1 if self.current == self.parts else self.parts
        return self.current

    def record(self, parts: int, seconds_per_sample: float) -> None:
        """How long a chunk run with ``parts`` threads took per sample."""
        recent = self._recent[self.current]
        if parts == self.current or not recent:
            self._recent[parts].append(seconds_per_sample)
            self._since += parts == self.current
            return
        self._since = 0
        if seconds_per_sample < self.MARGIN * sorted(recent)[len(recent) // 2]:
            self.current, self.interval = parts, self.SHORTEST
            self._recent[parts].clear()
            self._recent[parts].append(seconds_per_sample)
        else:
            self.interval = min(2 * self.interval, self.LONGEST)


class NativeStep:
    """The C step bound to one :class:`EngineState` (its tensors are used in place).

    ``threads`` workers split the replicas (at most one worker per replica);
    a single replica with the buffer memory is split instead: each worker owns
    a slice of the hidden layers' rows. With the reservoir memory the bank's
    state (``st.reservoir``) advances in place and its scores accumulate there.
    """

    def __init__(self, spec: StepSpec, st: EngineState, threads: int | None = None):
        reason = unsupported(spec, st)
        if reason is not None:
            raise ValueError(f"no C step: {reason}")
        self.spec, self.st = spec, st
        self.lib = library(st.weights[0].dtype)
        replicas = st.weights[0].shape[0]
        threads = max(1, threads or torch.get_num_threads())
        # only the buffer memory gains: recomputing the window reads all of W1 in every part (measured
        # 10,200 -> 6,700 samples/s split in two), and the reservoir's state would be shared
        split = replicas == 1 and spec.memory == "buffer" and st.weights[0].shape[1] >= threads > 1
        self.parts = threads if split else 1
        """Threads that share the one replica (1: the threads split the replicas)."""
        self.split = SplitOrSolo(self.parts) if self.parts > 1 else None
        """When the replica is split: whether each chunk runs split or on one thread."""
        self.threads = threads if split else min(threads, replicas)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        p = _Problem()
        p.n_hidden, p.replicas, p.window, p.steps = spec.n_hidden, replicas, spec.window, spec.steps
        p.parts = self.parts
        dims = [st.weights[0].shape[-1], *(w.shape[-2] for w in st.weights)]
        for i, d in enumerate(dims):
            p.dims[i] = d
        enum = _values(spec)
        p.activation, p.layernorm, p.has_bias = enum["activation"], int(spec.layernorm), int(bool(st.biases))
        p.variant, p.recompute, p.optim = enum["variant"], int(spec.memory == "recompute"), enum["optimizer"]
        p.leak = spec.leak or 0.0
        p.ln_eps = spec.layernorm_eps
        p.gamma = spec.gamma
        p.sigma_x, p.sigma_y, p.sigma_z = spec.sigmas
        p.beta1, p.beta2 = spec.optim.betas
        p.eps, p.momentum = spec.optim.eps, spec.optim.momentum
        for i, w in enumerate(st.weights):
            p.weight[i] = _addr(w)
            if st.biases:
                p.bias[i] = _addr(st.biases[i])
        for j, ms in enumerate(st.moments):
            if len(ms) > 0:
                p.moment1[j] = _addr(ms[0])
            if len(ms) > 1:
                p.moment2[j] = _addr(ms[1])
        p.past_x, p.past_y, p.kx, p.ky = _addr(st.past_x), _addr(st.past_y), _addr(st.kx), _addr(st.ky)
        dyn = spec.spiking
        if dyn is not None:
            p.spiking = 1
            p.spk_firing, p.spk_surrogate, p.spk_escape = enum["firing"], enum["surrogate"], enum["escape"]
            p.spk_reset, p.spk_readout, p.spk_refractory = enum["reset"], enum["spike_z"], int(dyn.neuron.refractory)
            p.spk_threshold, p.spk_slope, p.spk_width = dyn.neuron.threshold, dyn.slope, dyn.width
            p.spk_kappa = dyn.neuron.dt / dyn.tau_syn
        for i, z in enumerate(st.past_z):
            p.past_z[i] = _addr(z)
        self.problem = p
        if st.reservoir is not None:
            self._bind_reservoir(spec, st.reservoir)
        if st.features is not None:
            self._bind_features(spec, st.features)

    def _bind_features(self, spec: StepSpec, ft) -> None:
        p, fs = self.problem, spec.features
        p.fm_features, p.fm_stages, p.fm_lam = fs.features, len(fs.coef), fs.lam
        for j, c in enumerate(fs.coef):
            p.fm_coef[j] = c
        self._fm_omega = [ft.omega[0].contiguous()] + [o.transpose(0, 1).contiguous() for o in ft.omega[1:]]
        for i, o in enumerate(self._fm_omega):
            p.fm_omega_t[i] = _addr(o)
        p.fm_t1, p.fm_tx, p.fm_ty = _addr(ft.t1), _addr(ft.tx), _addr(ft.ty)
        for i, f in enumerate(ft.fast):
            p.fm_fast[i] = _addr(f)

    def _bind_reservoir(self, spec: StepSpec, res) -> None:
        p = self.problem
        start, col, val = compressed_rows(res.w_rec)
        w_in_t = res.w_in.transpose(1, 2).contiguous()
        self._res_tensors = [w_in_t, *(t.contiguous() for t in (res.w_fb, res.readout, res.scale)), start, col, val]
        p.res_units, p.res_in, p.res_out = res.w_rec.shape[-1], res.w_in.shape[-1], res.readout.shape[1]
        p.res_steps, p.res_feedback = spec.reservoir.steps, int(spec.reservoir.feedback)
        p.res_leak, p.res_gain = spec.reservoir.leak, spec.reservoir.gain
        (p.res_w_in_t, p.res_w_fb, p.res_readout, p.res_scale, p.res_rec_start, p.res_rec_col,
         p.res_rec_val) = (_addr(t) for t in self._res_tensors)
        p.res_u, p.res_r, p.res_ro = (_addr(t) for t in (res.u, res.r, res.r_out))

    def key(self) -> tuple:
        """The addresses this step is bound to (rebuild it when they change)."""
        return tuple(t.data_ptr() for t in self.st.tensors())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __call__(self, x_all: Tensor, y_all: Tensor, order: Tensor, noise: Tensor | None = None, prob: Tensor | None = None) -> None:
        """Learn from ``x_all[order[0]], x_all[order[1]], …`` (``x_all`` ``(n, d_x)``, one-hot ``y_all``, ``order`` int64).

        A spiking network that draws random numbers takes them in ``noise`` ``(R, len(order), T, width)`` (the
        weights' dtype, contiguous): per row the input's uniforms (an encoding), then each layer's; with an
        encoding, ``prob`` ``(len(order), d_x)`` is each sample's signed probability ``q`` of an input spike
        (:func:`~ibhebb.functional.spiking.signed_input_prob`: the input spikes ``sign(q)`` where ``noise < |q|``).
        """
        st, p, lib = self.st, self.problem, self.lib
        dtype = st.weights[0].dtype
        if x_all.dtype != dtype or y_all.dtype != dtype or not x_all.is_contiguous() or not y_all.is_contiguous():
            raise ValueError("x_all and y_all must be contiguous and of the weights' dtype")
        if x_all.device.type != "cpu" or order.device.type != "cpu":
            raise ValueError("the C step runs on CPU tensors only")
        order = order.to(torch.int64).contiguous()
        if len(order) == 0:
            return
        for i, (lr, wd) in enumerate(zip(st.lr, st.wd)):
            p.lr[i], p.wd[i] = float(lr), float(wd)
        p.step, (p.power1, p.power2) = float(st.step), st.powers.tolist()
        p.x_all, p.y_all, p.order, p.n_samples = _addr(x_all), _addr(y_all), _addr(order), len(order)
        if self.spec.spiking is not None:
            dyn = self.spec.spiking
            if dyn.random != (noise is not None):
                raise ValueError("a spiking network's noise must be given exactly when it draws random numbers")
            if noise is not None:
                width = (x_all.shape[1] if dyn.encoding != "current" else 0) + (
                    sum(w.shape[-2] for w in st.weights[:-1]) if dyn.firing == "escape" else 0)
                if (tuple(noise.shape) != (int(p.replicas), len(order), self.spec.steps, width) or noise.dtype != dtype
                        or not noise.is_contiguous()):
                    raise ValueError(f"noise must be a contiguous {dtype} tensor of shape ({int(p.replicas)}, {len(order)}, {self.spec.steps}, {width})")
                p.spk_in = x_all.shape[1] if dyn.encoding != "current" else 0
                p.spk_stride, p.spk_noise = width, _addr(noise)
                if p.spk_in:
                    if prob is None or tuple(prob.shape) != (len(order), p.spk_in) or prob.dtype != dtype or not prob.is_contiguous():
                        raise ValueError(f"prob must be a contiguous {dtype} tensor of shape ({len(order)}, {p.spk_in})")
                    p.spk_prob = _addr(prob)
                else:
                    p.spk_prob = None
            else:
                p.spk_in, p.spk_stride, p.spk_noise, p.spk_prob = 0, 0, None, None
        parts = self.split.next() if self.split is not None else self.parts
        p.parts = parts
        ref = ctypes.byref(p)
        start = time.perf_counter()
        if lib.ibhebb_begin(ref) != 0:
            raise MemoryError("the C step could not allocate its chunk")
        replicas = int(p.replicas)
        stats = torch.zeros(self.threads, self.spec.n_hidden, 6, dtype=torch.float64)
        bounds = [replicas * i // self.threads for i in range(self.threads + 1)]

        def work(i: int) -> int:
            if parts > 1:
                return lib.ibhebb_part(ref, 0, i, stats[i].data_ptr())
            return lib.ibhebb_replicas(ref, bounds[i], bounds[i + 1], stats[i].data_ptr())

        if self._pool is None:
            fails = [work(0)]
        elif self.parts > 1 and parts == 1:
            fails = [lib.ibhebb_replicas(ref, 0, replicas, stats[0].data_ptr())]
        else:
            fails = list(self._pool.map(work, range(self.threads)))
        lib.ibhebb_end(ref)
        if self.split is not None:
            self.split.record(parts, (time.perf_counter() - start) / len(order))
        if any(fails):
            raise MemoryError("the C step could not allocate its scratch memory")
        if st.reservoir is not None:
            st.reservoir.stats.add_(stats.sum(0))
        st.step.fill_(p.step)
        st.powers.copy_(torch.tensor([p.power1, p.power2], dtype=st.powers.dtype))

