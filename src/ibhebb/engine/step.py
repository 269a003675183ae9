"""One online update of ``biohsic`` as a function of a state of tensors (MATH §3–§5).

Everything the rule, the memory and the optimiser need lives in one
:class:`EngineState` of tensors, and :func:`sample_step_` advances it by one
sample (``T`` updates for a leaky network) in place, with no Python number
that changes from step to step and no host synchronisation, so the same code
runs eagerly, under ``torch.compile`` and inside a captured CUDA graph.

The window keeps its input and label kernel matrices up to date: each new
sample adds one row ``k(x_0, x_p)`` (``O(N d_x)``), instead of the
``O(N² d_x)`` of a fresh kernel matrix.

Per update, with ``z_0`` the current outputs (all from the weights of that
moment):

- hidden layer ``ℓ``: ``g_θ = (∂z_0^ℓ/∂θ^ℓ)ᵀ ξ^ℓ`` (ξ from
  :func:`~ibhebb.functional.signals.signal_from_kernels`), scaled by ``Δt/τ_m`` in a
  leaky layer;
- readout: ``g_W = (1/N) Σ_p (softmax(W h_p + b) - y_p) h_pᵀ`` over the window;
- then every parameter takes one optimiser step (:mod:`.optim`).

With the ``reservoir`` memory (MATH §4) ξ^ℓ is instead read out of a frozen
reservoir per hidden layer, advanced by :func:`reservoir_signals_` exactly
as :class:`~ibhebb.memory.reservoir.ReservoirMemory` advances it; the window's
true ξ is still computed, to score the reservoir's (``reservoir_stats``).

With the ``features`` memory (:mod:`ibhebb.functional.traces`) ξ^ℓ is a
readout of the memory's own traces (:class:`FeatureTensors`, used in place),
which each sample then joins (:func:`features_push_`), exactly as
:class:`~ibhebb.memory.features.FeatureMemory` does; the readout layer learns
from the current sample only, and the window is kept but not read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..functional.biohsic import (BioHSICParams, DenseTrace, WindowState, biohsic_grads, readout_grads, window_kernels, window_push_,
                                  window_signals)
from ..functional.conv import MapGeometry, conv_output, conv_patches, conv_preactivation, input_maps, pool, replica_conv2d
from ..functional.layers import LAYERNORM_EPS, affine, dense_output, dense_param_grads, layernorm, layernorm_vjp, leaky_step
from ..functional.spiking import LIFSpikeState, SpikeDynamics, encode_uniform, lif_rest, spiking_layer_step
from ..functional.optim import OptimSpec, fused_optimizer_update_, optimizer_update_
from ..functional.reservoir import ReservoirState, reservoir_inputs, reservoir_step
from ..functional.traces import (cascade_push_, fast_weight_increment, fourier_features, label_features, readout_scale, surprise,
                                 trace_readout)


MODELS = ("mlp", "lif-mlp", "spiking-mlp", "cnn")
"""The ``model.kind`` values the step runs."""


@dataclass(frozen=True)
class StepSpec:
    """The constants of a step: network, rule and optimiser settings (a compile-cache key)."""

    n_hidden: int
    activation: str
    layernorm: bool
    leak: float | None
    """``Δt/τ_m`` of a leaky network; ``None`` for the static MLP."""
    steps: int
    """``T``: updates per sample (1 for the static MLP)."""
    window: int
    memory: str
    variant: str
    gamma: float
    sigmas: tuple[float, float, float]
    optim: OptimSpec
    reservoir: "ReservoirSpec | None" = None
    layernorm_eps: float = LAYERNORM_EPS
    spiking: SpikeDynamics | None = None
    """The LIF neurons of a spiking network (``leak`` is then ``dt/τ_mem``); ``None`` for the rate networks."""
    maps: tuple[MapGeometry, ...] = ()
    """A convolutional network's hidden layers (empty for dense ones): their traces hold maps."""
    readout_pool: tuple[tuple[int, int, int], int] | None = None
    """``(in_shape, pool_in)`` of a readout that average-pools its input maps first (``None``: it does not)."""
    features: "FeatureSpec | None" = None
    """The constants of the ``features`` memory (``None`` for the other memories)."""

    @property
    def rule(self) -> BioHSICParams:
        return BioHSICParams(self.window, self.gamma, self.sigmas, self.variant)


def step_model(spec: StepSpec) -> str:
    """The ``model.kind`` of a spec."""
    if spec.maps:
        return "cnn"
    return "spiking-mlp" if spec.spiking is not None else "mlp" if spec.leak is None else "lif-mlp"


@dataclass(frozen=True)
class ReservoirSpec:
    """The constants of the reservoir memory: its Euler steps per update, leak ``Δt/τ_r``, gain ``λ``, feedback."""

    steps: int
    leak: float
    gain: float
    feedback: bool


@dataclass(frozen=True)
class FeatureSpec:
    """The constants of the features memory: ``D`` features per kernel, the cascade's ``λ`` and coefficients ``c_j``."""

    features: int
    lam: float
    coef: tuple[float, ...]


class FeatureTensors(NamedTuple):
    """A :class:`~ibhebb.memory.features.FeatureMemory`'s feature weights (read only) and traces (in place).

    ``omega`` ``(Ω_x, Ω_z^1, …)`` ``(d, D/2)``; ``t1`` ``(S,)``, ``tx`` ``(S, D)``, ``ty`` ``(S, C+1)`` the traces of
    the constant, the input and label features (shared by the replicas); ``fast[ℓ]`` ``(S, R, D, 2d_ℓ+2)`` the
    fast-weight matrices of each hidden layer.
    """

    omega: tuple[Tensor, ...]
    t1: Tensor
    tx: Tensor
    ty: Tensor
    fast: tuple[Tensor, ...]


class ReservoirTensors(NamedTuple):
    """The reservoir bank's weights ``(L, n, ·)`` (read only), its state ``(L, R, ·)`` and the scores of its ξ.

    ``stats`` ``(L, 6)`` float64 accumulates, per hidden layer, the count and the
    sums ``a, b, a², b², ab`` of the reservoir's ξ (``a``) and the true one (``b``).
    """

    w_rec: Tensor
    w_in: Tensor
    w_fb: Tensor
    readout: Tensor
    scale: Tensor
    u: Tensor
    r: Tensor
    r_out: Tensor
    stats: Tensor


class EngineState(NamedTuple):
    """The tensors one step reads and updates in place.

    ``weights[i]``/``biases[i]`` ``(R, out, in)``/``(R, out)`` for the hidden
    layers then the readout (``biases`` empty without bias); ``moments[j]`` the
    optimiser's tensors of the ``j``-th parameter of ``params()`` order;
    ``lr``/``wd`` one 0-dim tensor per parameter; ``step`` ``(1,)`` the
    optimiser's step count (not 0-dim: the compiler drops in-place updates of
    0-dim CPU inputs) and ``powers`` ``(2,)`` = ``(β₁ᵗ, β₂ᵗ)``, kept by
    multiplication (a ``pow`` would be recomputed for every element of the
    fused update); the window's past ``N - 1`` inputs ``(N-1, d_x)``, one-hot
    labels ``(N-1, C)`` and (``buffer``) hidden outputs ``(R, N-1, d_ℓ)``, and
    the kernel matrices of the past inputs and labels ``(N-1, N-1)``;
    ``reservoir`` the reservoir memory's tensors and ``features`` the features memory's
    (``None`` for the other memories).
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    moments: tuple[tuple[Tensor, ...], ...]
    lr: tuple[Tensor, ...]
    wd: tuple[Tensor, ...]
    step: Tensor
    powers: Tensor
    past_x: Tensor
    past_y: Tensor
    past_z: tuple[Tensor, ...]
    kx: Tensor
    ky: Tensor
    reservoir: ReservoirTensors | None = None
    features: FeatureTensors | None = None

    def params(self) -> list[Tensor]:
        """Parameters in the order of ``model.parameters()``: ``W, b`` of each layer."""
        if not self.biases:
            return list(self.weights)
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    @property
    def window(self) -> WindowState:
        """The window's past as the core's :class:`~ibhebb.functional.biohsic.WindowState` (the same tensors)."""
        return WindowState(self.past_x, self.past_y, self.past_z, self.kx, self.ky)

    def tensors(self) -> list[Tensor]:
        """Every tensor of the state (for copying and for CUDA-graph address checks)."""
        out = [*self.weights, *self.biases, *(t for ms in self.moments for t in ms), *self.lr, *self.wd, self.step, self.powers]
        fm = [] if self.features is None else [*self.features.omega, *self.features[1:4], *self.features.fast]
        return out + [self.past_x, self.past_y, *self.past_z, self.kx, self.ky, *(self.reservoir or ()), *fm]


def clone_state(st: EngineState) -> EngineState:
    """A deep copy of a state (same shapes and strides), e.g. to warm a compiled step up on."""

    def copy(f):
        if f is None or isinstance(f, Tensor):
            return None if f is None else f.clone()
        return type(f)(*(copy(t) for t in f)) if hasattr(f, "_fields") else tuple(copy(t) for t in f)

    return EngineState(*(copy(f) for f in st))


def _bias(st: EngineState, i: int) -> Tensor | None:
    return st.biases[i] if st.biases else None


def hidden_step(spec: StepSpec, st: EngineState, x: Tensor, us: list[Tensor] | None, grads: bool = True):
    """One time step of the hidden layers: a :class:`DenseTrace` per layer and the new potentials.

    ``grads = False``: only the outputs will be used; a convolution layer then runs torch's own convolution on the
    whole batch (faster for several samples) and keeps no patches for a weight gradient.
    """
    h, traces, new_us = x, [], []
    for i in range(spec.n_hidden):
        if spec.maps:
            g = spec.maps[i]
            if grads:
                h = conv_patches(h, g)
                a = conv_preactivation(h, st.weights[i], _bias(st, i), g)
            else:
                a = replica_conv2d(input_maps(h, g), st.weights[i], _bias(st, i), g.padding)
            r, z, scale = conv_output(a, g, spec.activation, spec.layernorm, spec.layernorm_eps, keep_scale=True)
            traces.append(DenseTrace(h, a, r, z, scale))
            h = z
            continue
        drive = affine(h, st.weights[i], _bias(st, i))
        a = drive if spec.leak is None else leaky_step(None if us is None else us[i], drive, spec.leak)
        r, z = dense_output(a, spec.activation, spec.layernorm, spec.layernorm_eps)
        traces.append(DenseTrace(h, a, r, z))
        new_us.append(a)
        h = z
    return traces, new_us


def represent(spec: StepSpec, st: EngineState, x: Tensor) -> list[Tensor]:
    """Hidden outputs of inputs ``x`` ``(B, d_x)`` with the current weights (after ``T`` steps from rest)."""
    if spec.spiking is not None:  # deterministic only (the engine draws no noise for the recompute memory)
        for traces in spiking_present(spec, st, x, None):
            pass
        return [t.z for t, _ in traces]
    us = None
    for _ in range(spec.steps):
        traces, us = hidden_step(spec, st, x, us, grads=False)
    return [t.z for t in traces]


def push_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor, zs: list[Tensor], kx: Tensor, ky: Tensor) -> None:
    """Remember the sample just presented; ``kx``/``ky`` are the window's ``(N, N)`` kernels with it last."""
    window_push_(st.window, x, y, zs if st.past_z else [], kx, ky)


def window_kernels_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return window_kernels(st.window, x, y, spec.sigmas)


def fill_step_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor) -> None:
    """Present a sample while the window is still filling: no update, only the push."""
    zs = represent(spec, st, x) if st.past_z else []
    if st.features is not None:  # its traces are its memory: the window's layout is kept but never read
        features_push_(spec, st.features, features_current(spec, st.features, x, y), zs)
        return
    push_(spec, st, x, y, zs, *window_kernels_(spec, st, x, y))


def _weighted(spec: StepSpec, ft: FeatureTensors, t: Tensor) -> Tensor:
    """``Σ_j c_j t_j`` of a trace ``(S, ...)``."""
    c = torch.tensor(spec.features.coef, dtype=t.dtype, device=t.device)
    return torch.tensordot(c, t, 1)


def features_current(spec: StepSpec, ft: FeatureTensors, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(φ_x(x), φ_y(y), s, scale)`` of the current sample: its features, its surprise against the traces and the
    scale of every readout (``(N-1)/N`` over the trace of the constant; 0 while it is empty), as
    :meth:`~ibhebb.memory.features.FeatureMemory._current` computes them."""
    N = spec.window
    scale = readout_scale(_weighted(spec, ft, ft.t1), N)
    px, py = fourier_features(x, ft.omega[0]), label_features(y, spec.sigmas[1])
    rx, ry = scale * _weighted(spec, ft, ft.tx), scale * _weighted(spec, ft, ft.ty)
    s = surprise((px * rx).sum(-1), (py * ry).sum(-1), window=N, gamma=spec.gamma)
    return px, py, s, scale


def features_signals(spec: StepSpec, ft: FeatureTensors, zs: list[Tensor], cur) -> list[Tensor]:
    """ξ^ℓ ``(R, d_ℓ)`` of outputs ``zs[ℓ]`` ``(R, 1, d_ℓ)`` read out of the fast weights (``cur``: :func:`features_current`)."""
    s0, scale = cur[2].view(1, 1, 1), cur[3]
    out = []
    for z, om, F in zip(zs, ft.omega[1:], ft.fast):
        r = scale * _weighted(spec, ft, fourier_features(z, om) @ F)  # (R, 1, 2d+2): each stage read, then weighed
        out.append(trace_readout(r, z, s0, window=spec.window, sigma_z=spec.sigmas[2], variant=spec.variant)[:, 0])
    return out


def features_push_(spec: StepSpec, ft: FeatureTensors, cur, zs: list[Tensor]) -> None:
    """The sample of ``cur`` (:func:`features_current`) with outputs ``zs`` joins the traces (in place)."""
    px, py, s, _ = cur
    lam = spec.features.lam
    cascade_push_(ft.t1, torch.ones_like(ft.t1[0]), lam)
    cascade_push_(ft.tx, px[0], lam)
    cascade_push_(ft.ty, py[0], lam)
    for z, om, F in zip(zs, ft.omega[1:], ft.fast):
        cascade_push_(F, fast_weight_increment(z, om, s), lam)


def reservoir_signals_(spec: StepSpec, res: ReservoirTensors, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
    """Advance the bank ``spec.reservoir.steps`` Euler steps with ``r_i = [x; y; z^ℓ]``; ξ^ℓ ``(R, d_ℓ)`` per layer.

    ``u ← lerp(u, λ W_r r + W_in r_i + W_fb r_o, leak)``, ``r = tanh(u)``,
    ``r_o = W_out r``, ``ξ^ℓ = r_o[:d_ℓ] / scale_ℓ`` (the state in place).
    """
    rs = spec.reservoir
    drive_in = torch.bmm(reservoir_inputs(x, y, zs, res.w_in.shape[-1], res.w_in.dtype), res.w_in.transpose(1, 2))
    state = ReservoirState(res.u, res.r)
    for _ in range(rs.steps):
        reservoir_step(state, drive_in, res.r_out if rs.feedback else None, res.w_rec, res.w_fb, leak=rs.leak, gain=rs.gain, out=state)
        torch.bmm(res.r, res.readout.transpose(1, 2), out=res.r_out)
    return [(res.r_out[l, :, : z.shape[-1]] / res.scale[l]).to(z.dtype) for l, z in enumerate(zs)]


def readout_inputs(spec: StepSpec, h: Tensor) -> Tensor:
    """The readout's input: the last hidden outputs ``h`` ``(R, N, d)``, average-pooled first where the readout pools."""
    if spec.readout_pool is None:
        return h
    shape, size = spec.readout_pool
    p = pool(h.reshape(*h.shape[:-1], *shape), size)
    return p.reshape(*h.shape[:-1], -1)


def _score_(stats: Tensor, layer: int, a: Tensor, b: Tensor) -> None:
    a, b = a.double(), b.double()
    n = torch.full((), float(a.numel()), dtype=torch.float64, device=a.device)
    stats[layer].add_(torch.stack([n, a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()]))


def update_(spec: StepSpec, st: EngineState, x: Tensor, yw: Tensor, kx: Tensor, ky: Tensor, us: list[Tensor] | None,
            cur=None):
    """One update (one Euler step of a leaky network) from potentials ``us`` (``None``: at rest).

    ``yw`` are the window's one-hot labels with the current one last, ``kx``/``ky``
    its kernel matrices; ``cur`` the current sample's :func:`features_current` (features memory).
    Returns the hidden layers' traces and the new potentials.
    """
    scale = 1.0 if spec.leak is None else spec.leak
    traces, us = hidden_step(spec, st, x, us)
    if st.features is not None:  # ξ from the traces; the readout sees the current sample only
        xis = features_signals(spec, st.features, [t.z for t in traces], cur)
        zws, yw = [traces[-1].z], yw[-1:]
    else:
        past = list(st.past_z) if st.past_z else represent(spec, st, st.past_x)
        zws = [torch.cat([zp, t.z], -2) for zp, t in zip(past, traces)]
        xis = window_signals(spec.rule, kx, ky, zws)
    if st.reservoir is not None:
        from_reservoir = reservoir_signals_(spec, st.reservoir, x, yw[-1:], [t.z for t in traces])
        for i, (mine, true) in enumerate(zip(from_reservoir, xis)):
            _score_(st.reservoir.stats, i, mine, true)
        xis = from_reservoir
    readout = spec.n_hidden
    grads = biohsic_grads(traces, xis, readout_inputs(spec, zws[-1]), yw, st.weights[readout], _bias(st, readout),
                          activation=spec.activation, layernorm=spec.layernorm, scale=scale,
                          layernorm_eps=spec.layernorm_eps, maps=spec.maps)
    st.step.add_(1)
    st.powers.mul_(st.powers.new_tensor(spec.optim.betas))
    powers = (st.powers[0], st.powers[1])
    if spec.maps and not torch.compiler.is_compiling():
        fused_optimizer_update_(spec.optim, st.params(), grads, st.moments, st.lr, st.wd, powers, st.step)
        return traces, us
    for p, g, ms, lr, wd in zip(st.params(), grads, st.moments, st.lr, st.wd):
        optimizer_update_(spec.optim, p, g, ms, lr, wd, powers)
    return traces, us


def leaky_update_(spec: StepSpec, st: EngineState, x: Tensor, yw: Tensor, kx: Tensor, ky: Tensor, us: list[Tensor], zs: list[Tensor]) -> None:
    """:func:`update_` with the potentials ``us`` (zeros at rest) and the hidden outputs ``zs`` kept in place.

    The unit the engine compiles for a leaky network: one update, called ``T``
    times per sample, instead of a sample that unrolls all ``T``. With ``u = 0``
    the Euler step ``u + (Δt/τ)(drive - u)`` is exactly the step from rest.
    """
    traces, new = update_(spec, st, x, yw, kx, ky, list(us))
    for u, a, z, t in zip(us, new, zs, traces):
        u.copy_(a)
        z.copy_(t.z)


def leaky_sample_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor, update) -> None:
    """:func:`sample_step_` as ``T`` calls of ``update(st, x, yw, kx, ky, us, zs)`` (a compiled :func:`leaky_update_`)."""
    kx, ky = window_kernels_(spec, st, x, y)
    yw = torch.cat([st.past_y, y], 0)
    us = [x.new_zeros(st.weights[0].shape[0], 1, w.shape[-2]) for w in st.weights[:-1]]
    zs = [u.clone() for u in us]
    for _ in range(spec.steps):
        update(st, x, yw, kx, ky, us, zs)
    push_(spec, st, x, y, zs, kx, ky)


def sample_step_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor) -> None:
    """Learn from one sample ``x`` ``(1, d_x)`` with one-hot label ``y`` ``(1, C)``: ``T`` updates, then the push.

    Equal to ``for _ in rule.updates(x, y): optimizer.step(); optimizer.zero_grad()``
    of :class:`~ibhebb.rules.biohsic.BioHSIC` with a ready memory.
    """
    us = None
    if st.features is not None:  # ξ from the traces, not the window (see fill_step_)
        cur = features_current(spec, st.features, x, y)
        for _ in range(spec.steps):
            traces, us = update_(spec, st, x, y, None, None, us, cur)
        features_push_(spec, st.features, cur, [t.z for t in traces])
        return
    kx, ky = window_kernels_(spec, st, x, y)
    yw = torch.cat([st.past_y, y], 0)
    for _ in range(spec.steps):
        traces, us = update_(spec, st, x, yw, kx, ky, us)
    push_(spec, st, x, y, [t.z for t in traces], kx, ky)


def chunk_step_(spec: StepSpec, st: EngineState, x_all: Tensor, y_all: Tensor, idx: Tensor) -> None:
    """:func:`sample_step_` for the samples ``x_all[idx[0]], x_all[idx[1]], …`` in turn (``idx`` on the device)."""
    for i in range(idx.shape[0]):
        j = idx[i : i + 1]
        sample_step_(spec, st, x_all.index_select(0, j), y_all.index_select(0, j))


# -- spiking networks ---------------------------------------------------------------------------
def spiking_time_step(spec: StepSpec, st: EngineState, x: Tensor, states: list[LIFSpikeState], step, u: Tensor | None):
    """Time step ``step`` (1-based: an int, or a 0-d tensor under ``torch.compile``) of every hidden layer presenting
    ``x`` ``(B, d_x)`` from ``states``: ``(traces, new_states)``, a ``(DenseTrace(h, ∂s/∂v', r, z), κ dt/τ_mem)`` per
    layer, as :meth:`~ibhebb.models.spiking.SpikingMLP.present` computes it.

    ``u`` ``(R, B, width)``: the step's uniforms (:func:`~ibhebb.functional.spiking.presentation_noise`), ``None`` when
    the presentation draws none.
    """
    dyn = spec.spiking
    d_in = x.shape[-1] if dyn.encoding != "current" else 0
    h = x if d_in == 0 else encode_uniform(x, u[..., :d_in], dyn.encoding, scale=dyn.input_scale, dt=dyn.neuron.dt,
                                           offset=dyn.input_offset)
    off, traces, new = d_in, [], []
    for i, state in enumerate(states):
        d = state.v.shape[-1]
        eta = u[..., off : off + d] if dyn.firing == "escape" else None
        off += d if dyn.firing == "escape" else 0
        s, g, r, kappa, state = spiking_layer_step(affine(h, st.weights[i], _bias(st, i)), state, step, dyn, eta)
        z = layernorm(r, eps=spec.layernorm_eps) if spec.layernorm else r
        traces.append((DenseTrace(h, g, r, z), kappa * spec.leak))
        new.append(state)
        h = s
    return traces, new


def spiking_rest(st: EngineState, x: Tensor) -> list[LIFSpikeState]:
    """Each hidden layer's resting state for presenting ``x`` ``(B, d_x)``."""
    return [lif_rest((st.weights[0].shape[0], x.shape[0], w.shape[-2]), like=x) for w in st.weights[:-1]]


def spiking_present(spec: StepSpec, st: EngineState, x: Tensor, noise: Tensor | None):
    """Per time step, each hidden layer's traces (:func:`spiking_time_step`) of presenting ``x`` from rest.

    ``noise`` ``(R, B, T, width)`` holds the presentation's uniforms; ``None`` when it draws none.
    """
    states = spiking_rest(st, x)
    for t in range(1, spec.steps + 1):
        traces, states = spiking_time_step(spec, st, x, states, t, None if noise is None else noise[:, :, t - 1])
        yield traces


def spiking_update_(spec: StepSpec, st: EngineState, x: Tensor, yw: Tensor, kx: Tensor, ky: Tensor, states: list[LIFSpikeState],
                    zs: list[Tensor], step, u: Tensor | None) -> None:
    """Time step ``step`` of presenting ``x`` and the update it makes: ξ over the window, every parameter's
    gradient and one optimiser step; the layers' ``states`` and outputs ``zs`` advance in place.

    The unit the engine compiles for a spiking network (``step`` a 0-d tensor, so one graph serves every step).
    """
    traces, new = spiking_time_step(spec, st, x, states, step, u)
    for old, state, z, (t, _) in zip(states, new, zs, traces):
        for a, b in zip(old, state):
            a.copy_(b)
        z.copy_(t.z)
    bias = bool(st.biases)
    past = list(st.past_z) if st.past_z else represent(spec, st, st.past_x)
    zws = [torch.cat([zp, t.z], -2) for zp, (t, _) in zip(past, traces)]
    xis = window_signals(spec.rule, kx, ky, zws)
    grads: list[Tensor] = []
    for (t, scale), xi in zip(traces, xis):
        cot = xi.unsqueeze(-2)
        if spec.layernorm:
            cot = layernorm_vjp(t.r, t.z, cot, eps=spec.layernorm_eps)
        gw, gb = dense_param_grads(t.h, cot * t.a, scale)
        grads += [gw, gb] if bias else [gw]
    gw, gb = readout_grads(zws[-1], yw, st.weights[-1], _bias(st, spec.n_hidden))
    grads += [gw, gb] if bias else [gw]
    st.step.add_(1)
    st.powers.mul_(st.powers.new_tensor(spec.optim.betas))
    powers = (st.powers[0], st.powers[1])
    for p, g, ms, lr, wd in zip(st.params(), grads, st.moments, st.lr, st.wd):
        optimizer_update_(spec.optim, p, g, ms, lr, wd, powers)


def spiking_sample_step_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor, noise: Tensor | None, update=None) -> None:
    """:func:`sample_step_` of a spiking network: ``T`` updates (one per time step), then the push.

    ``noise`` ``(R, 1, T, width)``: the sample's uniforms (:func:`spiking_present`). Equal to the rule's loop
    over :meth:`~ibhebb.models.spiking.SpikingMLP.present` when ``noise`` holds what the model would draw.
    ``update(st, x, yw, kx, ky, states, zs, step, u)``: a compiled :func:`spiking_update_`, called with ``step`` a
    0-d tensor (default: :func:`spiking_update_` itself, with ``step`` an int).
    """
    kx, ky = window_kernels_(spec, st, x, y)
    yw = torch.cat([st.past_y, y], 0)
    states = spiking_rest(st, x)
    zs = [state.v.clone() for state in states]
    for t in range(1, spec.steps + 1):
        u = None if noise is None else noise[:, :, t - 1]
        if update is None:
            spiking_update_(spec, st, x, yw, kx, ky, states, zs, t, u)
        else:
            update(st, x, yw, kx, ky, states, zs, x.new_tensor(float(t), dtype=torch.float64), u)
    push_(spec, st, x, y, zs, kx, ky)


def spiking_fill_step_(spec: StepSpec, st: EngineState, x: Tensor, y: Tensor, noise: Tensor | None) -> None:
    """:func:`fill_step_` of a spiking network (the presentation runs, drawing its noise, with no update)."""
    kx, ky = window_kernels_(spec, st, x, y)
    for traces in spiking_present(spec, st, x, noise):
        pass
    push_(spec, st, x, y, [t.z for t, _ in traces] if st.past_z else [], kx, ky)
