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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from .step import EngineState, StepSpec

MAX_LAYERS = 8
"""Hidden layers plus the readout that the C step supports (``MAXL`` in ``step.c``)."""

SOURCE = Path(__file__).with_name("native") / "step.c"
_REAL = {torch.float32: "float", torch.float64: "double"}
_ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "identity": 3}
_VARIANTS = {"paper": 0, "first-term": 1, "exact": 2}
_OPTIMS = {"adamw": 0, "adam": 1, "sgd": 2}

_i64, _f64, _ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p


class _Problem(ctypes.Structure):
    _fields_ = [
        ("n_hidden", _i64), ("replicas", _i64), ("window", _i64), ("steps", _i64), ("n_samples", _i64),
        ("dims", _i64 * (MAX_LAYERS + 1)),
        ("activation", _i64), ("layernorm", _i64), ("has_bias", _i64), ("variant", _i64), ("recompute", _i64), ("optim", _i64),
        ("leak", _f64), ("gamma", _f64), ("sigma_x", _f64), ("sigma_y", _f64), ("sigma_z", _f64),
        ("beta1", _f64), ("beta2", _f64), ("eps", _f64), ("momentum", _f64),
        ("lr", _f64 * (2 * MAX_LAYERS)), ("wd", _f64 * (2 * MAX_LAYERS)),
        ("step", _f64), ("power1", _f64), ("power2", _f64),
        ("weight", _ptr * MAX_LAYERS), ("bias", _ptr * MAX_LAYERS),
        ("moment1", _ptr * (2 * MAX_LAYERS)), ("moment2", _ptr * (2 * MAX_LAYERS)),
        ("past_x", _ptr), ("past_y", _ptr), ("past_z", _ptr * MAX_LAYERS), ("kx", _ptr), ("ky", _ptr),
        ("x_all", _ptr), ("y_all", _ptr), ("order", _ptr), ("work", _ptr),
        ("res_units", _i64), ("res_in", _i64), ("res_out", _i64), ("res_steps", _i64), ("res_feedback", _i64),
        ("res_leak", _f64), ("res_gain", _f64),
        ("res_w_in_t", _ptr), ("res_w_fb", _ptr), ("res_readout", _ptr), ("res_scale", _ptr),
        ("res_u", _ptr), ("res_r", _ptr), ("res_ro", _ptr),
        ("res_rec_start", _ptr), ("res_rec_col", _ptr), ("res_rec_val", _ptr),
        ("parts", _i64),
    ]


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
    source, machine, errors = SOURCE.read_bytes(), [platform.machine(), _cpu_id()], []
    for arch in (["-march=native"], []):  # some compilers (older clang on arm64) refuse -march=native
        flags = arch + common
        key = hashlib.sha256(source + " ".join([cc, *flags, *machine]).encode()).hexdigest()[:16]
        out = cache_dir() / f"ibhebb_step_{real}_{key}.so"
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            res = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(tmp, out)  # atomic: concurrent processes (a sweep) may compile at once
                return out
            errors.append((res.stderr or res.stdout).strip()[:300])
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
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
            lib.ibhebb_replicas.argtypes = [ctypes.POINTER(_Problem), _i64, _i64, _ptr]
            lib.ibhebb_replicas.restype = ctypes.c_int
            lib.ibhebb_part.argtypes = [ctypes.POINTER(_Problem), _i64, _i64, _ptr]
            lib.ibhebb_part.restype = ctypes.c_int
            lib.ibhebb_problem_size.restype = lib.ibhebb_real_size.restype = _i64
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
    if spec.n_hidden + 1 > MAX_LAYERS:
        return f"more than {MAX_LAYERS - 1} hidden layers"
    if spec.memory not in ("buffer", "recompute", "reservoir"):
        return f"memory {spec.memory!r}"
    if st.reservoir is not None and st.reservoir.w_rec.dtype != st.weights[0].dtype:
        return f"a {st.reservoir.w_rec.dtype} reservoir for {st.weights[0].dtype} weights"
    tensors = st.tensors()
    if any(t.device.type != "cpu" for t in tensors):
        return "tensors not on the CPU"
    dtype = st.weights[0].dtype
    res = [] if st.reservoir is None else list(st.reservoir)[:-1]  # its stats are float64
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
        self.threads = threads if split else min(threads, replicas)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        p = _Problem()
        p.n_hidden, p.replicas, p.window, p.steps = spec.n_hidden, replicas, spec.window, spec.steps
        p.parts = self.parts
        dims = [st.weights[0].shape[-1], *(w.shape[-2] for w in st.weights)]
        for i, d in enumerate(dims):
            p.dims[i] = d
        p.activation, p.layernorm, p.has_bias = _ACTIVATIONS[spec.activation], int(spec.layernorm), int(bool(st.biases))
        p.variant, p.recompute, p.optim = _VARIANTS[spec.variant], int(spec.memory == "recompute"), _OPTIMS[spec.optim.name]
        p.leak = spec.leak or 0.0
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
        for i, z in enumerate(st.past_z):
            p.past_z[i] = _addr(z)
        self.problem = p
        if st.reservoir is not None:
            self._bind_reservoir(spec, st.reservoir)

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

    def __call__(self, x_all: Tensor, y_all: Tensor, order: Tensor) -> None:
        """Learn from ``x_all[order[0]], x_all[order[1]], …`` (``x_all`` ``(n, d_x)``, one-hot ``y_all``, ``order`` int64)."""
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
        ref = ctypes.byref(p)
        if lib.ibhebb_begin(ref) != 0:
            raise MemoryError("the C step could not allocate its chunk")
        replicas = int(p.replicas)
        stats = torch.zeros(self.threads, self.spec.n_hidden, 6, dtype=torch.float64)
        bounds = [replicas * i // self.threads for i in range(self.threads + 1)]

        def work(i: int) -> int:
            if self.parts > 1:
                return lib.ibhebb_part(ref, 0, i, stats[i].data_ptr())
            return lib.ibhebb_replicas(ref, bounds[i], bounds[i + 1], stats[i].data_ptr())

        fails = [work(0)] if self._pool is None else list(self._pool.map(work, range(self.threads)))
        lib.ibhebb_end(ref)
        if any(fails):
            raise MemoryError("the C step could not allocate its scratch memory")
        if st.reservoir is not None:
            st.reservoir.stats.add_(stats.sum(0))
        st.step.fill_(p.step)
        st.powers.copy_(torch.tensor([p.power1, p.power2], dtype=st.powers.dtype))

