"""Drive the online step over an epoch: in C, with torch ops, ``torch.compile``d in chunks, or replayed from a CUDA graph.

:class:`OnlineEngine` trains a model with ``biohsic`` exactly as the rule's
loop ``for _ in rule.updates(x, y): optimizer.step()`` would, one sample at a
time over a shuffled order of a data set that stays on the device:

- the first ``N - 1`` samples of a run only fill the window (eager);
- on the CPU, chunks of samples go through one call of the C step
  (:mod:`.cstep`), which trains each replica over the whole chunk while its
  weights and moments sit in cache; if it cannot run (no C compiler, an
  unsupported layout), the engine falls back to the rest of this list;
- otherwise chunks of ``k`` samples go through one call of the compiled
  :func:`~.step.chunk_step_` (CPU), or through one replay of a CUDA graph
  that captured ``G`` such calls (CUDA), with the sample indices in a
  device buffer, so there is no host synchronisation inside a chunk;
- a leaky network instead calls the compiled single update
  :func:`~.step.leaky_update_` ``T`` times per sample (compiling a sample
  that unrolls ``T = 20`` updates took minutes);
- the samples left over at the end of an epoch run eagerly.

Compiled functions are cached per (spec, shapes, device) for the whole
process; if compiling fails the engine warns once and runs eagerly.
:attr:`OnlineEngine.backend` says which path ran the last epoch.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from typing import Callable

import torch
from torch import Tensor

from . import cstep
from .capability import NATIVE, spec_facts
from .state import bind, unbind
from ..functional.spiking import UNIFORM_DTYPE, presentation_noise, signed_input_prob
from .step import (EngineState, StepSpec, chunk_step_, clone_state, fill_step_, leaky_sample_, leaky_update_, sample_step_,
                   spiking_fill_step_, spiking_sample_step_, spiking_update_)
from .threads import TorchThreads, loop_threads

MODES = ("auto", "native", "compile", "torch")
MODE_ALIASES = {"eager": "torch"}
"""Old spellings of :data:`MODES`, accepted with a deprecation warning."""
NATIVE_CHUNK = 256
"""Updates per call of the C step (``NATIVE_CHUNK // T`` samples of a network that makes ``T`` updates per sample):
long enough to amortise the call, short enough for a lively progress bar and for a one-replica step to notice soon
that splitting over threads no longer pays (:class:`~.cstep.SplitOrSolo` decides per call)."""
NOISE_ELEMENTS = 1 << 22
"""At most this many random numbers per chunk of a spiking network (its chunks shrink to fit)."""
_COMPILED: dict = {}


def _compiled(step: Callable, spec: StepSpec) -> Callable:
    key = (step.__name__, spec)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(functools.partial(step, spec), dynamic=False, fullgraph=True)
    return _COMPILED[key]


def default_chunk(device: torch.device, replicas: int = 1) -> int:
    """Samples per compiled call: on the CPU 8 for one replica, 1 for several; 4 on CUDA.

    Within a chunk the compiler never stores the intermediate optimiser moments:
    it recomputes sample ``k``'s from the chunk's start (``O(k²)`` passes over
    the moments). That is cheap while one replica's moments sit in cache and
    saves the per-call overhead, but with several replicas the step is bound by
    memory traffic and one sample per call was 2.8× faster (R = 30, CPU).
    A network with ``T > 1`` updates per sample does not chunk: it compiles one update.
    """
    if device.type == "cuda":
        return 4
    return 1 if replicas > 1 else 8


def flushing_subnormals() -> bool:
    """Whether this thread's floating-point mode flushes subnormal results to zero."""
    return sys.float_info.min * sys.float_info.epsilon == 0.0


@contextlib.contextmanager
def flush_subnormals():
    """Flush subnormal floats to zero in this thread's torch ops for a block, then give back the caller's mode.

    Adam's second moment of a unit whose gradient stays zero decays into the
    subnormal range, where x86 arithmetic is ~100x slower. torch's intra-op
    worker threads keep their own mode (torch sets only the calling thread's);
    the C step sets it in each of its workers.
    """
    was = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was:
            torch.set_flush_denormal(False)


class OnlineEngine:
    """Fast online ``biohsic`` training with the same result as the rule's own loop.

    Parameters
    ----------
    spec : StepSpec
    model, memory, optimizer
        The model (an ``MLP`` or ``LeakyMLP``), the rule's window memory and
        the optimiser; they stay the source of truth between epochs.
    mode : {"auto", "native", "compile", "torch"}
        ``auto``: the C step on the CPU where it can run, else the torch step
        under ``torch.compile`` (if ``torch_compile``), falling back to it
        uncompiled with a warning if that fails; ``native``, ``compile`` and
        ``torch`` (the uncompiled torch step) insist on one path.
    chunk : int, optional
        Samples per call of the C step (default: :data:`NATIVE_CHUNK` updates) or per
        compiled call (default :func:`default_chunk`).
    graph_samples : int
        On CUDA, samples per captured graph (a multiple of ``chunk``).
    torch_compile : bool
        Whether ``auto`` may use ``torch.compile`` (not worth it for a short run).
    """

    def __init__(self, spec: StepSpec, model, memory, optimizer, *, mode: str = "auto", chunk: int | None = None, graph_samples: int = 256,
                 torch_compile: bool = True):
        if mode in MODE_ALIASES:
            warnings.warn(f"engine mode {mode!r} is now spelled {MODE_ALIASES[mode]!r}", DeprecationWarning, stacklevel=2)
            mode = MODE_ALIASES[mode]
        if mode not in MODES:
            raise ValueError(f"unknown engine mode {mode!r}; choose one of {', '.join(MODES)}")
        self.spec, self.model, self.memory, self.optimizer, self.mode = spec, model, memory, optimizer, mode
        weight = model.layers()[0].weight
        self.native_chunk = chunk or max(1, NATIVE_CHUNK // spec.steps)
        self.chunk = chunk or default_chunk(weight.device, weight.shape[0])
        self.graph_samples = max(self.chunk, graph_samples // self.chunk * self.chunk)
        self.torch_compile = torch_compile or mode == "compile"
        self._graph = None
        self._graph_key = None
        self._state: EngineState | None = None
        self._native: cstep.NativeStep | None = None
        self._native_key = None
        self.compile_failed = False
        self._threads: TorchThreads | None = None
        self.backend: str | None = None
        """``native``, ``compile``, ``cuda-graph`` or ``torch``: what ran the last epoch's updates."""
        self.chunk_used: int | None = None
        """Samples per call of the C step in the last epoch (a spiking network's chunks shrink to bound its noise)."""
        self.fallback: str | None = None
        """Why the last epoch did not run the C step in ``auto`` mode on the CPU (``None``: it did, or was not asked to)."""
        if mode == "native":
            reason = cstep.unavailable(weight.dtype) if weight.device.type == "cpu" else "the C step runs on the CPU only"
            if reason is not None:
                raise ValueError(f"no C step: {reason}")

    def _loop_threads(self, device: torch.device) -> TorchThreads:
        """Torch's threads for the torch step's loops, kept from epoch to epoch (:mod:`.threads`)."""
        self._threads = loop_threads(device, self._threads)
        return self._threads

    def _keep(self, st: EngineState) -> EngineState:
        """Reuse the last epoch's state tensors (copying the fresh values in), so a captured graph stays valid.

        Only when the weights and moments are still the same storage (not after a
        checkpoint replaced the optimiser's state): those are never copied.
        """
        old = self._state
        owned = lambda s: [*s.params(), *(t for ms in s.moments for t in ms)]  # noqa: E731
        if old is None or [t.data_ptr() for t in owned(old)] != [t.data_ptr() for t in owned(st)] or any(
            a.shape != b.shape for a, b in zip(old.tensors(), st.tensors())
        ):
            self._state = st
            return st
        for a, b in zip(old.tensors(), st.tensors()):
            if a.data_ptr() != b.data_ptr():
                a.copy_(b)
        return old

    # -- compiled chunk ------------------------------------------------------------------------
    def _compiled_fn(self, step: Callable) -> Callable | None:
        if self.mode in ("torch", "native") or self.compile_failed or not self.torch_compile:
            return None
        if self.spec.maps and self.mode == "auto":  # a convolution step is its convolutions: compiling would not repay
            return None
        if self.spec.features is not None:  # the features memory's torch step runs eagerly (its C step is the fast one)
            return None
        return _compiled(step, self.spec)

    def _native_step(self, st: EngineState) -> cstep.NativeStep | None:
        """The C step bound to ``st`` when the mode allows it and it can run, else ``None``."""
        if self.mode not in ("auto", "native"):
            return None
        if self._native is not None and self._native.st is st and self._native_key == (self._native.key(), torch.get_num_threads()):
            return self._native
        if self._native is not None:
            self._native.close()
            self._native = None
        reason = NATIVE.why_not(spec_facts(self.spec)) or cstep.unsupported(self.spec, st)
        if reason is not None:
            if self.mode == "native":
                raise ValueError(f"no C step: {reason}")
            self.fallback = reason
            return None
        self._native = cstep.NativeStep(self.spec, st)
        self._native_key = (self._native.key(), torch.get_num_threads())
        return self._native

    def _run(self, fn: Callable, step: Callable, *args) -> None:
        """``fn(*args)``; if compiling fails, warn once and run ``step`` eagerly from now on."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back, once
            if self.mode == "compile":
                raise
            self.compile_failed = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f"ibhebb engine: torch.compile failed ({first[:200]}); running the step eagerly", stacklevel=2)
            step(self.spec, *args)

    def _leaky_sample(self, st: EngineState, x: Tensor, y: Tensor) -> None:
        """One sample of a leaky network through ``T`` calls of the compiled update (same result as :func:`sample_step_`)."""
        fn = self._compiled_fn(leaky_update_)
        if fn is None:
            sample_step_(self.spec, st, x, y)
            return

        def update(*args):
            if self.compile_failed:
                leaky_update_(self.spec, *args)
            else:
                self._run(fn, leaky_update_, *args)

        leaky_sample_(self.spec, st, x, y, update)

    def _cuda_graph(self, fn: Callable, st: EngineState, x: Tensor, y: Tensor) -> tuple:
        key = tuple(t.data_ptr() for t in st.tensors()) + (x.data_ptr(), y.data_ptr())
        if self._graph_key == key:
            return self._graph
        idx = torch.zeros(self.graph_samples, dtype=torch.long, device=x.device)
        cur = torch.zeros(self.chunk, dtype=torch.long, device=x.device)  # one aligned input for every call
        scratch = clone_state(st)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up (compile, autotune) on a copy: the real state must not move
                fn(scratch, x, y, cur)
        torch.cuda.current_stream().wait_stream(stream)
        del scratch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(0, self.graph_samples, self.chunk):
                cur.copy_(idx[i : i + self.chunk])
                fn(st, x, y, cur)
        self._graph, self._graph_key = (graph, idx), key
        return self._graph

    # -- the window's first samples ------------------------------------------------------------
    def _fill(self, count: int, x: Tensor, y1: Tensor, order: Tensor, fill: Callable[[Tensor, Tensor, Tensor], None],
              progress) -> tuple[int, int]:
        """Present ``order``'s samples with ``fill(x_j, y_j, j)`` (no update) until the window holds ``N - 1``;
        returns how many were presented and the window's new count."""
        n, pos = len(order), 0
        while count < self.spec.window - 1 and pos < n:
            j = order[pos : pos + 1]
            fill(x.index_select(0, j), y1.index_select(0, j), j)
            pos, count = pos + 1, count + 1
        if progress and pos:
            progress(pos)
        return pos, count

    # -- a spiking network -----------------------------------------------------------------------
    def _spiking_epoch(self, st: EngineState, count: int, x: Tensor, y1: Tensor, order: Tensor, progress) -> tuple[int, int]:
        """An epoch of a spiking network: the C step in chunks, else the torch step per sample (one compiled update per time step).

        The random numbers come from the model's generators of the current stream, drawn per chunk in the
        order the model's own presentation draws them, so the weights equal the rule's loop.
        """
        spec, dyn = self.spec, self.spec.spiking
        gens, dims = self.model.generators(), [w.shape[-2] for w in st.weights[:-1]]
        n, updates = len(order), 0

        buffer = torch.empty(NOISE_ELEMENTS, dtype=UNIFORM_DTYPE) if dyn.random else None

        def noise(idx: Tensor) -> Tensor | None:
            return presentation_noise(dyn, x.index_select(0, idx), spec.steps, dims, gens, buffer)

        pos, count = self._fill(count, x, y1, order, lambda xj, yj, j: spiking_fill_step_(spec, st, xj, yj, noise(j)), progress)
        step = self._native_step(st) if pos < n else None
        if step is not None:
            self.backend = "native"
            width = (x.shape[1] if dyn.encoding != "current" else 0) + (sum(dims) if dyn.firing == "escape" else 0)
            chunk = self.native_chunk if not dyn.random else max(1, min(self.native_chunk, NOISE_ELEMENTS // (len(gens) * spec.steps * width)))
            self.chunk_used = chunk
            xc, yc = x.contiguous(), y1.contiguous()
            while pos < n:
                k = min(chunk, n - pos)
                idx = order[pos : pos + k]
                prob = None
                if dyn.encoding != "current":
                    prob = signed_input_prob(x.index_select(0, idx), dyn.encoding, scale=dyn.input_scale, dt=dyn.neuron.dt,
                                             offset=dyn.input_offset).contiguous()
                step(xc, yc, idx, noise(idx), prob)
                pos, count, updates = pos + k, count + k, updates + k * spec.steps
                if progress:
                    progress(k)
        fn = self._compiled_fn(spiking_update_) if pos < n else None
        if pos < n and self.backend is None:
            self.backend = "compile" if fn is not None else "torch"

        def update(*args):
            if self.compile_failed:
                spiking_update_(spec, *args)
            else:
                self._run(fn, spiking_update_, *args)

        with self._loop_threads(x.device) as threads:
            while pos < n:
                j = order[pos : pos + 1]
                spiking_sample_step_(spec, st, x.index_select(0, j), y1.index_select(0, j), noise(j), None if fn is None else update)
                pos, count, updates = pos + 1, count + 1, updates + spec.steps
                threads.advance(1)
                if progress:
                    progress(1)
        return updates, count

    # -- an epoch ------------------------------------------------------------------------------
    def train_epoch(self, x: Tensor, y1: Tensor, order: Tensor, progress: Callable[[int], None] | None = None) -> int:
        """Learn from ``x[order[0]], x[order[1]], …`` (``x`` ``(n, d_x)``, one-hot ``y1`` ``(n, C)``); returns the updates made."""
        spec = self.spec
        self.backend = self.fallback = None
        with torch.no_grad(), flush_subnormals():
            st, count = bind(spec, self.model, self.memory, self.optimizer)
            st = self._keep(st)
            if spec.spiking is not None:
                updates, count = self._spiking_epoch(st, count, x, y1, order, progress)
                unbind(spec, st, count, self.model, self.memory, self.optimizer)
                return updates
            n, updates = len(order), 0
            pos, count = self._fill(count, x, y1, order, lambda xj, yj, j: fill_step_(spec, st, xj, yj), progress)
            step = self._native_step(st) if pos < n else None
            if step is not None:
                self.backend = "native"
                self.chunk_used = self.native_chunk
                xc, yc = x.contiguous(), y1.contiguous()
                while pos < n:
                    k = min(self.native_chunk, n - pos)
                    step(xc, yc, order[pos : pos + k])
                    pos, count, updates = pos + k, count + k, updates + k * spec.steps
                    if progress:
                        progress(k)
            per_update = spec.steps > 1
            fn = None if per_update or pos >= n else self._compiled_fn(chunk_step_)
            if fn is not None and x.device.type == "cuda":
                try:
                    graph, idx = self._cuda_graph(fn, st, x, y1)
                except Exception as e:  # noqa: BLE001
                    if self.mode == "compile":
                        raise
                    self.compile_failed, fn = True, None
                    warnings.warn(f"ibhebb engine: CUDA graph capture failed ({str(e).splitlines()[0][:200]}); running eagerly", stacklevel=2)
                else:
                    g = self.graph_samples
                    if pos + g <= n:
                        self.backend = "cuda-graph"
                    while pos + g <= n:
                        idx.copy_(order[pos : pos + g])
                        graph.replay()
                        pos, count, updates = pos + g, count + g, updates + g * spec.steps
                        if progress:
                            progress(g)
            k = self.chunk
            cur = torch.empty(k, dtype=torch.long, device=x.device)
            with self._loop_threads(x.device) as threads:
                while fn is not None and not self.compile_failed and pos + k <= n:
                    self.backend = "compile"
                    self._run(fn, chunk_step_, st, x, y1, cur.copy_(order[pos : pos + k]))
                    pos, count, updates = pos + k, count + k, updates + k * spec.steps
                    threads.advance(k)
                    if progress:
                        progress(k)
                if pos < n and self.backend is None:
                    self.backend = "compile" if per_update and self._compiled_fn(leaky_update_) is not None else "torch"
                # The eager step only updates the state in place: inference mode spares each op its autograd bookkeeping
                # (a fifth of the time of a CNN update's ~250 small ops); a compiled step would recompile under it.
                with torch.inference_mode(not per_update):
                    while pos < n:
                        j = order[pos : pos + 1]
                        xj, yj = x.index_select(0, j), y1.index_select(0, j)
                        if per_update:
                            self._leaky_sample(st, xj, yj)
                        else:
                            sample_step_(spec, st, xj, yj)
                        pos, count, updates = pos + 1, count + 1, updates + spec.steps
                        threads.advance(1)
                        if progress:
                            with torch.inference_mode(False):  # whatever the caller keeps stays an ordinary tensor
                                progress(1)
            unbind(spec, st, count, self.model, self.memory, self.optimizer)
        return updates
