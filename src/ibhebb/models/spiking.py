"""Spiking networks under the three-factor rule (MATH §10): ``model.kind = "spiking-mlp"``.

Each hidden layer is a population of leaky integrate-and-fire neurons
(:mod:`ibhebb.functional.spiking`): at step ``t`` of the ``T`` steps a sample
is presented for, layer ``ℓ`` integrates ``I_t = W h_t + b`` where ``h_t`` is
the previous layer's spikes of the same step (or the input, as currents or
spike trains), fires, and resets. Every sample starts from rest.

What the kernels and the working memory see, ``z``, is the layer's per-sample
readout of its spikes (``spike_z``): the spike ``count`` so far per step
(``c_t/t``) or a synaptic ``trace`` with its own ``tau_syn``, optionally
followed by the parameter-free LayerNorm (``layernorm``). The memory stores
(or recomputes) ``z`` at the last step, as it stores rates.

The local factor ``β = ∂z_t/∂θ`` of step ``t`` holds the previous state fixed
(potential, refractory count, readout), so with ``x = v'_t - ϑ``::

    ∂z_t/∂W = LN'(r_t) · κ_t · g(x) · (dt/τ_mem) h_tᵀ

with ``κ_t = ∂r_t/∂s_t`` (``1/t`` or ``dt/τ_syn``) and ``g`` the spike's
derivative: the surrogate (``firing = "surrogate"``) or the escape function's
``f'`` (``firing = "escape"``), 0 for a refractory neuron. The layer's trace
therefore carries ``a = g(x)`` (not the preactivation), ``r`` the readout
before the LayerNorm, ``z``, and ``scale = κ_t dt/τ_mem``; ``output_vjp``
multiplies a cotangent of ``z`` by ``LN'`` and ``a``, and ``accumulate_grad``
by ``scale h_tᵀ``, as for the other layers.

The readout is a linear layer on the last hidden layer's ``z`` (its logits),
trained by the rule's delta rule.

Under autograd the forward pass is differentiable through time with the same spike derivative (the
surrogate, or the escape function's ``f'``), the reset's spike detached (as Zenke & Vogels 2021
recommend): ``rule.name = "spiking-bptt"`` trains it end to end, the baseline spiking users compare with.

Randomness (spike encodings and escape noise) comes from one generator per
replica, derived from ``(seed, replica)`` (so replica ``r`` of seed ``s``
spikes the same whatever the number of replicas), one stream for training
(:meth:`SpikingMLP.present`, and :meth:`~SpikingMLP.represent` while
training, e.g. the ``recompute`` memory) and one for evaluation; both are
part of the model's ``state_dict``, so a resumed run draws what it would have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..config import register_check, require, require_choice
from ..functional import spiking as F
from ..functional.layers import layernorm, layernorm_vjp
from .conv import Conv2dLayer, PooledDense
from .layers import Dense, replica_generators
from .networks import FeedForward, LayerTrace, Stepped


SPIKING_KINDS = ("spiking-mlp", "spiking-cnn")
"""The spiking model kinds (the ``[model]`` keys of :func:`spiking_kwargs` apply to both)."""


def spike_generators(seed: int, replicas: int, stream: int) -> list[torch.Generator]:
    """One generator per replica for the spike noise of ``stream`` (0 training, 1 evaluation), apart from the weights' generators."""
    return [torch.Generator().manual_seed((stream + 1) * 2**40 + 1_000_003 * seed + r) for r in range(replicas)]


@dataclass
class SpikeTrace(LayerTrace):
    """A :class:`LayerTrace` of a spiking layer: ``a`` is ``∂s/∂v'`` (see the module docstring); also ``v'`` and the spikes."""

    v: Tensor | None = None
    spikes: Tensor | None = None


class SpikeReadout:
    """What a spiking layer's neurons give the kernels: ``z = LN(r)`` (or ``r``) of their readout ``r``, and its local
    factor (mixed into the synapse classes, which provide ``layernorm``)."""

    def output(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``(r, z)`` from the readout ``r``: ``z = LN(r)`` or ``r``."""
        return r, (layernorm(r) if self.layernorm else r)

    def output_vjp(self, a: Tensor, r: Tensor, z: Tensor, cot: Tensor) -> Tensor:
        """Cotangent of ``z`` → cotangent of ``v'``, with ``a = ∂s/∂v'`` (κ and ``dt/τ_mem`` are the trace's ``scale``)."""
        if self.layernorm:
            cot = layernorm_vjp(r, z, cot)
        return cot * a


class SpikingDense(SpikeReadout, Dense):
    """The synapses ``I = W h + b`` of a LIF population and the local factor of its readout.

    The neurons' dynamics are run by :class:`SpikingMLP`, which holds their state.
    """

    def __init__(self, in_features: int, out_features: int, *, generators, layernorm: bool = False, bias: bool = True):
        super().__init__(in_features, out_features, generators=generators, activation="identity", layernorm=layernorm, bias=bias)


class SpikingConv2d(SpikeReadout, Conv2dLayer):
    """The synapses ``I = W ⋆ P_in(h) + b`` of a map of LIF neurons, on flattened maps, and the local factor of its readout.

    A 3×3 "same" convolution of the input maps, average-pooled by ``pool_in`` first (the previous layer's spike
    maps become fractions of spikes, a fixed linear map as in :class:`~ibhebb.models.cnn.CNN`); every position of
    every output channel is a neuron. ``z`` is the layer's readout map, flattened (LayerNorm over the whole map).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.layers import replica_generators
    >>> from ibhebb.models.spiking import SpikingConv2d
    >>> layer = SpikingConv2d((1, 6, 6), 2, generators=replica_generators(0, 3), pool_in=2)
    >>> layer.out_features, layer.preactivation(torch.randn(5, 36)).shape
    (18, torch.Size([3, 5, 18]))
    """

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, *, generators, layernorm: bool = False,
                 bias: bool = True, pool_in: int = 1):
        super().__init__(in_shape, out_channels, generators=generators, activation="identity", layernorm=layernorm, bias=bias,
                         pool_in=pool_in)

    def preactivation(self, h: Tensor) -> Tensor:
        """``I = W ⋆ P_in(h) + b``, flattened: ``(R, B, O·H·W)``."""
        return super().preactivation(h).flatten(-3)

    @torch.no_grad()
    def accumulate_grad(self, h: Tensor, a_cot: Tensor, scale: float = 1.0) -> None:
        """:meth:`Conv2dLayer.accumulate_grad` of a flattened cotangent of ``I``."""
        super().accumulate_grad(h, a_cot.reshape(*a_cot.shape[:-1], *self.conv_shape), scale)


class SpikingMLP(Stepped, FeedForward):
    """Hidden layers of LIF neurons, then a linear readout of the last one's ``z``, ``R`` replicas.

    Parameters
    ----------
    in_features, hidden, n_classes
        Layer sizes.
    neuron : LIFSpikeParams
        ``tau_mem``, ``threshold``, ``reset``, ``refractory`` (steps), ``dt``.
    steps : int
        ``T``, steps each sample is presented for.
    firing : {"surrogate", "escape"}
    surrogate, surrogate_slope, escape, escape_width
        The surrogate derivative, or the escape function and its width δ.
    encoding : {"current", "bernoulli", "poisson"}
    input_scale, input_offset : float
        Spike encodings: the probability of an input spike is ``min(1, scale |x + offset|)`` (bernoulli).
    spike_z : {"count", "trace"}
    tau_syn : float
    layernorm : bool
        LayerNorm of the readout before the kernels see it (part of β).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.spiking import SpikingMLP
    >>> net = SpikingMLP(2, [10, 4], 2, replicas=3, seed=0, steps=8, firing="escape")
    >>> traces = list(net.present(torch.randn(5, 2)))
    >>> len(traces), traces[-1][0].z.shape, net(torch.randn(5, 2)).shape
    (8, torch.Size([3, 5, 10]), torch.Size([3, 5, 2]))
    """

    kind = "spiking-mlp"

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        n_classes: int,
        *,
        replicas: int = 1,
        seed: int = 0,
        neuron: F.LIFSpikeParams = F.LIFSpikeParams(),
        steps: int = 20,
        firing: str = "surrogate",
        surrogate: str = "fast-sigmoid",
        surrogate_slope: float = 5.0,
        escape: str = "sigmoid",
        escape_width: float = 0.25,
        encoding: str = "current",
        input_scale: float = 1.0,
        input_offset: float = 0.0,
        spike_z: str = "count",
        tau_syn: float = 5.0,
        layernorm: bool = False,
        bias: bool = True,
    ):
        for value, options, name in (
            (neuron.reset, F.RESETS, "reset"), (firing, F.FIRINGS, "firing"), (surrogate, F.SURROGATES, "surrogate"),
            (escape, F.ESCAPES, "escape"), (encoding, F.ENCODINGS, "encoding"), (spike_z, F.SPIKE_Z, "spike_z"),
        ):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")
        gens = replica_generators(seed, replicas)
        layers, readout, d_in = self.synapses(in_features, hidden, n_classes, gens, layernorm, bias)
        super().__init__(layers, readout, in_features=d_in, n_classes=n_classes, replicas=replicas, seed=seed)
        self.neuron, self.steps = neuron, steps
        self.firing, self.surrogate, self.surrogate_slope = firing, surrogate, surrogate_slope
        self.escape, self.escape_width = escape, escape_width
        self.encoding, self.input_scale, self.input_offset = encoding, input_scale, input_offset
        self.spike_z, self.tau_syn = spike_z, tau_syn
        self.streams = [spike_generators(seed, replicas, s) for s in (0, 1)]

    @staticmethod
    def synapses(in_features, hidden, n_classes, gens, layernorm, bias) -> tuple[list, Dense, int]:
        """``(hidden layers, readout, input size)``: :class:`SpikingDense` layers of ``hidden`` sizes, a linear readout."""
        sizes = [in_features, *hidden]
        layers = [SpikingDense(i, o, generators=gens, layernorm=layernorm, bias=bias) for i, o in zip(sizes[:-1], sizes[1:])]
        return layers, Dense(sizes[-1], n_classes, generators=gens, activation="identity", layernorm=False, bias=bias), in_features

    # -- randomness ----------------------------------------------------------------------------
    def generators(self) -> list[torch.Generator]:
        """The replicas' generators of the current stream (training or evaluation)."""
        return self.streams[0 if self.training else 1]

    def train(self, mode: bool = True):
        """Also restarts the evaluation stream on entering evaluation: every evaluation pass sees the same noise,
        whatever was evaluated before it (so no measurement depends on which others a run makes)."""
        if not mode:
            self.streams[1] = spike_generators(self.seed, self.replicas, 1)
        return super().train(mode)

    def get_extra_state(self) -> dict:
        return {"streams": [[g.get_state() for g in gens] for gens in self.streams]}

    def set_extra_state(self, state: dict) -> None:
        for gens, states in zip(self.streams, state["streams"]):
            for g, s in zip(gens, states):
                g.set_state(s)

    # -- dynamics ------------------------------------------------------------------------------
    @property
    def dynamics(self) -> F.SpikeDynamics:
        """The neurons, firing, encoding and readout as one :class:`~ibhebb.functional.spiking.SpikeDynamics`."""
        return F.SpikeDynamics(self.neuron, self.firing, self.surrogate, self.surrogate_slope, self.escape, self.escape_width,
                               self.encoding, self.input_scale, self.spike_z, self.tau_syn, self.input_offset)

    def _fire(self, v_pre: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """``(spikes, ∂s/∂v')`` of one layer's step (:func:`~ibhebb.functional.spiking.fire`).

        Under autograd (the BPTT baseline) the spikes carry the same derivative: through
        :class:`~ibhebb.functional.spiking.SurrogateSpike`, or ``s + f - f.detach()`` (escape noise).
        """
        x = v_pre - self.neuron.threshold
        noise = F.replica_uniform(x.shape[1:], self.generators(), x) if self.firing == "escape" else None
        s, grad = F.fire(x.detach(), active, self.firing, noise, surrogate=self.surrogate, slope=self.surrogate_slope,
                         escape=self.escape, width=self.escape_width)
        if torch.is_grad_enabled() and x.requires_grad:
            on = active.to(x.dtype)
            if self.firing == "surrogate":
                s = F.SurrogateSpike.apply(x, self.surrogate, self.surrogate_slope) * on
            else:
                f = F.escape_prob(x, self.escape, self.escape_width)
                s = s + (f - f.detach()) * on
        return s, grad

    def present(self, x: Tensor) -> Iterator[list[LayerTrace]]:
        """Per step, each hidden layer's :class:`SpikeTrace` then the readout's :class:`LayerTrace`."""
        x = self.flatten(x)
        p, leak = self.neuron, self.neuron.dt / self.neuron.tau_mem
        states = [F.lif_rest((self.replicas, x.shape[0], layer.out_features), like=x) for layer in self.hidden]
        for t in range(1, self.steps + 1):
            h = F.encode(x, self.encoding, generators=self.generators(), scale=self.input_scale, dt=p.dt,
                         offset=self.input_offset)
            traces: list[LayerTrace] = []
            for i, layer in enumerate(self.hidden):
                st = states[i]
                v_pre, active = F.lif_potential(layer.preactivation(h), st, p)
                s, g = self._fire(v_pre, active)
                r, kappa = F.readout_step(st.trace, s, t, self.spike_z, tau_syn=self.tau_syn, dt=p.dt)
                states[i] = F.lif_reset(v_pre, s.detach(), st, p)._replace(trace=r)
                r, z = layer.output(r)
                traces.append(SpikeTrace(h, g, r, z, kappa * leak, v=v_pre, spikes=s))
                h = s
            zl = traces[-1].z if traces else x
            logits = self.readout.preactivation(zl)
            traces.append(LayerTrace(zl, logits, logits, logits))
            yield traces


    @torch.no_grad()
    def firing_statistics(self, x: Tensor, batch_size: int = 1000) -> list[dict[str, list[float]]]:
        """Per hidden layer and replica, on ``x``: ``rate`` (spikes per neuron per step), ``spikes_per_sample`` (all its
        neurons, all ``T`` steps), ``silent`` (fraction of neurons that never fire), ``always_on`` (fraction that fire
        at every step of every sample) and ``binary`` (fraction of (sample, neuron) pairs whose spike count over the
        ``T`` steps is 0 or ``T``: 1 for a layer of threshold units, 0 for a graded rate code)."""
        totals = [torch.zeros(self.replicas, layer.out_features, dtype=torch.float64) for layer in self.hidden]
        full = [torch.zeros_like(t) for t in totals]
        binary = [torch.zeros(self.replicas, dtype=torch.float64) for _ in self.hidden]
        for i in range(0, len(x), batch_size):
            counts = [0] * len(self.hidden)
            for traces in self.present(x[i : i + batch_size]):
                counts = [c + tr.spikes.double().cpu() for c, tr in zip(counts, traces[:-1])]
            for tot, f, b, c in zip(totals, full, binary, counts):
                tot += c.sum(1)
                f += (c == self.steps).sum(1)
                b += ((c == 0) | (c == self.steps)).double().mean(-1).sum(1)
        n, out = max(len(x), 1), []
        for tot, f, b in zip(totals, full, binary):
            out.append({
                "rate": (tot.mean(-1) / (n * self.steps)).tolist(),
                "spikes_per_sample": (tot.sum(-1) / n).tolist(),
                "silent": (tot == 0).double().mean(-1).tolist(),
                "always_on": (f == n).double().mean(-1).tolist(),
                "binary": (b / n).tolist(),
            })
        return out


class SpikingCNN(SpikingMLP):
    """:class:`SpikingMLP` with convolutional LIF layers (:class:`SpikingConv2d`): ``model.kind = "spiking-cnn"``.

    ``in_shape`` ``(C, H, W)``, ``channels`` the output channels of each 3×3 convolution; each layer after the
    first, and the linear readout, average-pools the previous layer's spike (or readout) maps by ``pool``
    first. Everything else (neurons, firing, β, encodings, readout, randomness) is :class:`SpikingMLP`'s; the
    engine has no step for it (the rule's own loop trains it).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.spiking import SpikingCNN
    >>> net = SpikingCNN((1, 8, 8), [2, 3], 4, replicas=2, steps=3)
    >>> net(torch.randn(5, 1, 8, 8)).shape, [layer.out_features for layer in net.hidden]
    (torch.Size([2, 5, 4]), [128, 48])
    """

    kind = "spiking-cnn"
    pool = 2

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], n_classes: int, **kwargs):
        super().__init__(tuple(in_shape), list(channels), n_classes, **kwargs)
        self.in_shape = tuple(in_shape)

    @classmethod
    def synapses(cls, in_shape, channels, n_classes, gens, layernorm, bias) -> tuple[list, Dense, int]:
        shape, pending, layers = tuple(in_shape), 1, []
        for c in channels:
            layers.append(SpikingConv2d(shape, c, generators=gens, layernorm=layernorm, bias=bias, pool_in=pending))
            shape, pending = layers[-1].conv_shape, cls.pool
        readout = PooledDense(shape, n_classes, pool_in=pending, generators=gens, activation="identity", layernorm=False,
                              bias=bias)
        return layers, readout, math.prod(in_shape)


def spiking_kwargs(m) -> dict:
    """The :class:`SpikingMLP` keyword arguments of a ``[model]`` config table."""
    return dict(
        neuron=F.LIFSpikeParams(m.tau_m, m.threshold, m.reset, m.refractory, m.dt), steps=m.steps, firing=m.firing,
        surrogate=m.surrogate, surrogate_slope=m.surrogate_slope, escape=m.escape, escape_width=m.escape_width,
        encoding=m.encoding, input_scale=m.input_scale, input_offset=m.input_offset, spike_z=m.spike_z, tau_syn=m.tau_syn, layernorm=m.layernorm,
        bias=m.bias,
    )


@register_check
def check_spiking_config(cfg) -> None:
    """The ``spiking-mlp`` keys: names among their choices, positive times and scales, ``dt`` no longer than the time constants."""
    m = cfg.model
    if m.kind not in SPIKING_KINDS:
        return
    require_choice(m.reset, F.RESETS, "model.reset")
    require_choice(m.firing, F.FIRINGS, "model.firing")
    require_choice(m.surrogate, F.SURROGATES, "model.surrogate")
    require_choice(m.escape, F.ESCAPES, "model.escape")
    require_choice(m.encoding, F.ENCODINGS, "model.encoding")
    require_choice(m.spike_z, F.SPIKE_Z, "model.spike_z")
    for key in ("tau_m", "dt", "threshold", "surrogate_slope", "escape_width", "input_scale", "tau_syn"):
        require(getattr(m, key) > 0, f"model.{key} must be positive, got {getattr(m, key)}")
    require(m.dt <= m.tau_m, f"model.dt = {m.dt} must not exceed model.tau_m = {m.tau_m} (the Euler step would overshoot)")
    require(m.dt <= m.tau_syn, f"model.dt = {m.dt} must not exceed model.tau_syn = {m.tau_syn}")
    require(math.isfinite(m.input_offset), f"model.input_offset must be a finite number, got {m.input_offset}")
    require(m.refractory >= 0, f"model.refractory must be >= 0 steps, got {m.refractory}")
    require(m.steps >= 1, f"model.steps must be >= 1, got {m.steps}")
    sizes, key = (m.hidden, "hidden") if m.kind == "spiking-mlp" else (m.channels, "channels")
    require(len(sizes) >= 1 and all(h >= 1 for h in sizes), f"model.{key} must be positive sizes, got {sizes}")
