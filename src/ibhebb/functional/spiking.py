r"""Spiking neurons as pure functions of tensors: leaky integrate-and-fire, surrogates, escape noise, encodings, readouts.

Leaky integrate-and-fire (LIF), Euler steps of ``dt`` (the Norse form, and
the rate model's equation of MATH §5 with a threshold):

.. math::

    v'_t = v_{t-1} + \frac{dt}{\tau_{mem}} (I_t - v_{t-1}), \qquad I_t = W h_t + b

    s_t = H(v'_t - \vartheta) \quad \text{(deterministic)}, \qquad
    s_t \sim \mathrm{Bernoulli}(f(v'_t - \vartheta)) \quad \text{(escape noise)}

    v_t = v'_t (1 - s_t) \ \text{(reset "zero")}, \qquad v_t = v'_t - \vartheta s_t \ \text{(reset "subtract")}

``H(x) = 1[x > 0]`` (a spike needs the potential strictly above threshold, as
in snnTorch and Norse). snnTorch's ``beta`` is ``1 - dt/tau_mem`` here, and
its input current is ``I dt/tau_mem``. A neuron that spiked is refractory for
the next ``refractory`` steps: its potential is held at its value after the
reset, it does not integrate and it cannot spike.

The local derivative of the spike with respect to the potential, the part of
the three-factor rule's ``β`` that a threshold would make zero:

- ``surrogate``: :func:`surrogate_grad` replaces ``H'``: fast sigmoid
  ``1 / (1 + k|x|)²`` (SuperSpike; peak 1) or arctan
  ``(k/2) / (1 + (π k x / 2)²)`` (peak ``k/2``), ``x = v' - ϑ``, ``k`` the slope;
- ``escape``: the neuron fires with probability :func:`escape_prob`
  ``p = f(x)``, and the derivative is that of the expected spike, ``f'(x)``
  (:func:`escape_prob_grad`): sigmoid ``f = σ(x/δ)``, ``f' = f (1 - f)/δ``;
  exponential ``f = min(1, exp(x/δ))``, ``f' = f/δ`` below saturation
  (``f' = f`` at ``δ = 1``, the poster's "derivative of the activation is the
  activation").

A refractory neuron's derivative is 0: its potential does not depend on the
weights at that step.

Examples
--------
>>> import torch
>>> from ibhebb.functional.spiking import LIFSpikeParams, lif_rest, lif_spike_step
>>> p = LIFSpikeParams(tau_mem=2.0, threshold=1.0, reset="zero", dt=1.0)
>>> state, spikes = lif_rest((1, 1)), []
>>> for _ in range(6):
...     s, state = lif_spike_step(torch.tensor([[3.0]]), state, p)
...     spikes.append(int(s))
>>> spikes  # v' = 1.5 → spike, reset to 0, and again
[1, 1, 1, 1, 1, 1]
>>> state, spikes = lif_rest((1, 1)), []
>>> for _ in range(6):
...     s, state = lif_spike_step(torch.tensor([[1.5]]), state, p)
...     spikes.append(int(s))
>>> spikes  # v' = 0.75, 1.125 → spike every second step
[0, 1, 0, 1, 0, 1]
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

RESETS = ("zero", "subtract")
FIRINGS = ("surrogate", "escape")
SURROGATES = ("fast-sigmoid", "arctan")
ESCAPES = ("sigmoid", "exp")
ENCODINGS = ("current", "bernoulli", "poisson")
SPIKE_Z = ("count", "trace")


class LIFSpikeParams(NamedTuple):
    """Parameters of a LIF neuron (see the module docstring for the equations).

    ``refractory`` is a number of steps (0: none).
    """

    tau_mem: float = 5.0
    threshold: float = 1.0
    reset: str = "zero"
    refractory: int = 0
    dt: float = 1.0


class LIFSpikeState(NamedTuple):
    """``v`` the potential after the last reset; ``refractory_count`` steps left refractory; ``trace`` the readout
    (:func:`readout_step`)."""

    v: Tensor
    refractory_count: Tensor
    trace: Tensor


def lif_rest(shape: Sequence[int], like: Tensor | None = None) -> LIFSpikeState:
    """The resting state: ``v = 0``, not refractory, readout 0."""
    kw = {} if like is None else dict(dtype=like.dtype, device=like.device)
    z = torch.zeros(*shape, **kw)
    return LIFSpikeState(z, torch.zeros(*shape, dtype=torch.long, device=z.device), z.clone())


def lif_potential(input_current: Tensor, state: LIFSpikeState, p: LIFSpikeParams) -> tuple[Tensor, Tensor]:
    """``(v', active)``: the potential before the reset and the mask of neurons that are not refractory.

    ``v' = v + (dt/τ_mem)(I - v)`` where active, ``v`` (held) where refractory.
    """
    active = state.refractory_count == 0
    v = state.v + (p.dt / p.tau_mem) * (input_current - state.v)
    return torch.where(active, v, state.v.expand_as(v)), active


def heaviside(x: Tensor) -> Tensor:
    """``H(x) = 1[x > 0]`` in ``x``'s dtype."""
    return (x > 0).to(x.dtype)


def lif_reset(v_pre: Tensor, spikes: Tensor, state: LIFSpikeState, p: LIFSpikeParams) -> LIFSpikeState:
    """The state after the spikes: reset ``v``, start (or count down) the refractory period; ``trace`` is kept."""
    v = v_pre * (1 - spikes) if p.reset == "zero" else v_pre - p.threshold * spikes
    fired = spikes > 0
    count = torch.where(fired, torch.full_like(state.refractory_count, p.refractory), (state.refractory_count - 1).clamp_min(0))
    return LIFSpikeState(v, count.expand(v.shape), state.trace)


def lif_spike_step(
    input_current: Tensor, state: LIFSpikeState, p: LIFSpikeParams, *, noise: Tensor | None = None,
    escape: str = "sigmoid", width: float = 1.0,
) -> tuple[Tensor, LIFSpikeState]:
    """One Euler step of a LIF neuron: ``(spikes, new_state)``.

    Without ``noise`` the neuron fires deterministically when ``v' > ϑ``; with
    ``noise`` (uniform on [0, 1), the shape of the potential) it fires when
    ``noise < f(v' - ϑ)`` (escape noise, :func:`escape_prob`). Refractory
    neurons never fire. ``state.trace`` is passed through unchanged.
    """
    v_pre, active = lif_potential(input_current, state, p)
    x = v_pre - p.threshold
    fire = heaviside(x) if noise is None else (noise < escape_prob(x, escape, width)).to(x.dtype)
    spikes = fire * active.to(x.dtype)
    return spikes, lif_reset(v_pre, spikes, state, p)


def surrogate_grad(x: Tensor, kind: str = "fast-sigmoid", slope: float = 5.0) -> Tensor:
    """The surrogate of ``H'(x)``: fast sigmoid ``1/(1 + k|x|)²`` or arctan ``(k/2)/(1 + (πkx/2)²)``.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import surrogate_grad
    >>> surrogate_grad(torch.tensor([0.0, 0.2]), "fast-sigmoid", 5.0).tolist()
    [1.0, 0.25]
    """
    if kind == "fast-sigmoid":
        return 1.0 / (1.0 + slope * x.abs()) ** 2
    if kind == "arctan":
        return (slope / 2) / (1.0 + (math.pi * slope * x / 2) ** 2)
    raise ValueError(f"unknown surrogate {kind!r}; choose one of {', '.join(SURROGATES)}")


class SurrogateSpike(torch.autograd.Function):
    """``H(x)`` forward, :func:`surrogate_grad` backward: what surrogate-gradient training differentiates through.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import SurrogateSpike
    >>> x = torch.tensor([-0.2, 0.0, 0.6], requires_grad=True)
    >>> s = SurrogateSpike.apply(x, "fast-sigmoid", 5.0)
    >>> s.tolist(), torch.autograd.grad(s.sum(), x)[0].tolist()
    ([0.0, 0.0, 1.0], [0.25, 1.0, 0.0625])
    """

    @staticmethod
    def forward(ctx, x: Tensor, kind: str, slope: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.slope = kind, slope
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * surrogate_grad(x, ctx.kind, ctx.slope), None, None


def escape_prob(x: Tensor, kind: str = "sigmoid", width: float = 1.0) -> Tensor:
    """Firing probability per step at ``x = v' - ϑ``: ``σ(x/δ)`` or ``min(1, exp(x/δ))``.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import escape_prob
    >>> escape_prob(torch.tensor([0.0]), "sigmoid", 0.5).item(), escape_prob(torch.tensor([-1.0]), "exp", 1.0).item()
    (0.5, 0.3678794503211975)
    """
    if kind == "sigmoid":
        return torch.sigmoid(x / width)
    if kind == "exp":
        return torch.exp((x / width).clamp_max(0.0))
    raise ValueError(f"unknown escape function {kind!r}; choose one of {', '.join(ESCAPES)}")


def escape_prob_grad(x: Tensor, kind: str = "sigmoid", width: float = 1.0) -> Tensor:
    """``f'(x)`` of :func:`escape_prob`: ``f(1 - f)/δ``, or ``f/δ`` below saturation (``x < 0``) and 0 above."""
    f = escape_prob(x, kind, width)
    if kind == "sigmoid":
        return f * (1 - f) / width
    return torch.where(x < 0, f / width, torch.zeros_like(f))


def spike_grad(x: Tensor, firing: str, *, surrogate: str = "fast-sigmoid", slope: float = 5.0,
               escape: str = "sigmoid", width: float = 1.0) -> Tensor:
    """``∂s/∂v'`` at ``x = v' - ϑ`` for ``firing`` ``"surrogate"`` or ``"escape"`` (the expected spike's derivative)."""
    if firing == "surrogate":
        return surrogate_grad(x, surrogate, slope)
    if firing == "escape":
        return escape_prob_grad(x, escape, width)
    raise ValueError(f"unknown firing {firing!r}; choose one of {', '.join(FIRINGS)}")


UNIFORM_DTYPE = torch.float32
"""The dtype the spike noise is drawn in (then cast): 24 bits of resolution, half the cost of float64 draws."""


def replica_uniform(shape: Sequence[int], generators: Sequence[torch.Generator], like: Tensor) -> Tensor:
    """``U[0, 1)`` of ``shape`` for each replica from its own generator, stacked: ``(R, *shape)``.

    Drawn on the CPU (where the generators live) then moved, so a replica's draws
    do not depend on the device or on how many replicas there are.
    """
    u = torch.stack([torch.rand(*shape, generator=g, dtype=UNIFORM_DTYPE) for g in generators])
    return u.to(device=like.device, dtype=like.dtype)


def encode(x: Tensor, encoding: str, *, generators: Sequence[torch.Generator] = (), scale: float = 1.0,
           dt: float = 1.0, offset: float = 0.0) -> Tensor:
    """One time step of input: ``x`` ``(B, d)`` as currents (unchanged, shared by the replicas) or spikes ``(R, B, d)``.

    ``bernoulli``: a spike with probability ``min(1, scale |x + offset|)``; ``poisson``:
    a Poisson process of rate ``scale |x + offset|`` per unit time, sampled at ``dt``
    (probability ``1 - exp(-scale |x + offset| dt)`` of a spike in the step). A spike
    carries the sign of ``x + offset`` (negative inputs make inhibitory spikes).
    ``offset = 1, scale = 0.5`` turns images normalised to [-1, 1] back into pixel
    intensities in [0, 1] (a black pixel never spikes). Each replica draws from its own generator.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import encode
    >>> g = [torch.Generator().manual_seed(0)]
    >>> encode(torch.tensor([[0.0, 1.0, -1.0]]), "bernoulli", generators=g).tolist()
    [[[0.0, 1.0, -1.0]]]
    >>> encode(torch.tensor([[-1.0, 1.0]]), "bernoulli", generators=g, scale=0.5, offset=1.0).tolist()
    [[[0.0, 1.0]]]
    """
    if encoding == "current":
        return x
    return encode_uniform(x, replica_uniform(x.shape, generators, x), encoding, scale=scale, dt=dt, offset=offset)


def encode_uniform(x: Tensor, u: Tensor, encoding: str, *, scale: float = 1.0, dt: float = 1.0,
                   offset: float = 0.0) -> Tensor:
    """:func:`encode`'s spikes of ``x`` from given uniforms ``u`` (any shape ``x`` broadcasts to): ``1[u < |q|] sign(q)``
    with ``q`` the :func:`signed_input_prob`."""
    q = signed_input_prob(x, encoding, scale=scale, dt=dt, offset=offset)
    return (u < q.abs()).to(x.dtype) * torch.sign(q)


def signed_input_prob(x: Tensor, encoding: str, *, scale: float = 1.0, dt: float = 1.0, offset: float = 0.0) -> Tensor:
    """``q = sign(x + offset) p``: the probability ``p`` of an input spike in a step (:func:`input_prob`) with the
    spike's sign.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import signed_input_prob
    >>> signed_input_prob(torch.tensor([-1.0, -1.5, 0.5]), "bernoulli", scale=0.5, offset=1.0).tolist()
    [0.0, -0.25, 0.75]
    """
    x = x + offset if offset else x
    return torch.sign(x) * input_prob(x, encoding, scale=scale, dt=dt)


def input_prob(x: Tensor, encoding: str, *, scale: float = 1.0, dt: float = 1.0) -> Tensor:
    """The probability of an input spike in a step: ``min(1, scale |x|)`` (bernoulli) or ``1 - exp(-scale |x| dt)`` (poisson)."""
    mag = x.abs() * scale
    if encoding == "bernoulli":
        return mag.clamp_max(1.0)
    if encoding == "poisson":
        return -torch.expm1(-mag * dt)
    raise ValueError(f"unknown spike encoding {encoding!r}; choose one of bernoulli, poisson")


def fire(x: Tensor, active: Tensor, firing: str, noise: Tensor | None = None, *, surrogate: str = "fast-sigmoid",
         slope: float = 5.0, escape: str = "sigmoid", width: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(s, ∂s/∂v')`` of one step at ``x = v' - ϑ``: ``H(x)`` and the surrogate, or ``1[noise < f(x)]`` and ``f'(x)``
    (escape noise, ``noise`` uniform on [0, 1)); both 0 where the neuron is not ``active`` (refractory)."""
    on = active.to(x.dtype)
    if firing == "surrogate":
        s = heaviside(x)
    else:
        s = (noise < escape_prob(x, escape, width)).to(x.dtype)
    return s * on, spike_grad(x, firing, surrogate=surrogate, slope=slope, escape=escape, width=width) * on


class SpikeDynamics(NamedTuple):
    """Everything a spiking layer's step needs besides its weights: the neuron, the firing and its derivative,
    the input encoding and the readout (the fields of :class:`~ibhebb.models.spiking.SpikingMLP`)."""

    neuron: LIFSpikeParams
    firing: str = "surrogate"
    surrogate: str = "fast-sigmoid"
    slope: float = 5.0
    escape: str = "sigmoid"
    width: float = 0.25
    encoding: str = "current"
    input_scale: float = 1.0
    spike_z: str = "count"
    tau_syn: float = 5.0
    input_offset: float = 0.0

    @property
    def random(self) -> bool:
        """Whether a presentation draws random numbers (spike encodings, escape noise)."""
        return self.encoding != "current" or self.firing == "escape"


def presentation_noise(dyn: SpikeDynamics, x: Tensor, steps: int, dims: Sequence[int],
                       generators: Sequence[torch.Generator], buffer: Tensor | None = None) -> Tensor | None:
    """The uniforms of presenting the rows of ``x`` ``(K, d_x)`` one after the other: ``(R, K, steps, width)``.

    Per replica, sample and step, in the order a presentation draws them: the input's ``d_x`` (a spike
    encoding, :func:`encode_uniform`), then each layer's ``dims[ℓ]`` (escape noise); ``None`` if it draws
    none. One draw per replica (a generator's stream does not depend on how it is cut into calls), in
    :data:`UNIFORM_DTYPE` on the CPU, then cast to ``x``'s dtype and device as :func:`replica_uniform` does.
    ``buffer`` (1-D, :data:`UNIFORM_DTYPE`, CPU), when it is long enough, is drawn into instead of fresh
    memory (a caller that draws per chunk saves the page faults of a new tensor each time).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import LIFSpikeParams, SpikeDynamics, presentation_noise
    >>> dyn = SpikeDynamics(LIFSpikeParams(), firing="escape", encoding="bernoulli")
    >>> gens = [torch.Generator().manual_seed(r) for r in range(2)]
    >>> presentation_noise(dyn, torch.ones(3, 4), 5, [6, 2], gens).shape  # 4 input spikes, 6 + 2 uniforms
    torch.Size([2, 3, 5, 12])
    """
    d_in = x.shape[-1] if dyn.encoding != "current" else 0
    width = d_in + (sum(dims) if dyn.firing == "escape" else 0)
    if width == 0:
        return None
    k, r = x.shape[0], len(generators)
    if buffer is not None and buffer.numel() >= r * k * steps * width:
        u = buffer[: r * k * steps * width].view(r, k * steps * width)
    else:
        u = torch.empty(r, k * steps * width, dtype=UNIFORM_DTYPE)
    for row, g in zip(u, generators):
        torch.rand(k * steps * width, generator=g, dtype=UNIFORM_DTYPE, out=row)
    return u.view(len(generators), k, steps, width).to(device=x.device, dtype=x.dtype)


def spiking_layer_step(current: Tensor, state: LIFSpikeState, step: int, dyn: SpikeDynamics,
                       noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, float, LIFSpikeState]:
    """Step ``step`` (1-based) of a LIF population driven by ``current``: ``(s, ∂s/∂v', r, κ, new_state)``.

    Integrate (:func:`lif_potential`), :func:`fire`, update the readout (:func:`readout_step`), reset
    (:func:`lif_reset`, the new state's ``trace`` is ``r``).
    """
    p = dyn.neuron
    v_pre, active = lif_potential(current, state, p)
    s, g = fire(v_pre - p.threshold, active, dyn.firing, noise, surrogate=dyn.surrogate, slope=dyn.slope,
                escape=dyn.escape, width=dyn.width)
    r, kappa = readout_step(state.trace, s, step, dyn.spike_z, tau_syn=dyn.tau_syn, dt=p.dt)
    return s, g, r, kappa, lif_reset(v_pre, s, state, p)._replace(trace=r)


def readout_step(trace: Tensor, spikes: Tensor, step: int, spike_z: str = "count", *, tau_syn: float = 5.0,
                 dt: float = 1.0) -> tuple[Tensor, float]:
    """The per-sample readout after step ``step`` (1-based) and ``κ = ∂(readout)/∂s_t`` (previous readout fixed).

    ``count``: the spike count so far per step, ``c_t / t = r_{t-1} + (s_t - r_{t-1})/t``, ``κ = 1/t``
    (at the last step the spike count over the presentation divided by ``T``: a firing rate per step).
    ``trace``: a synaptic trace, ``r_t = r_{t-1} + (dt/τ_syn)(s_t - r_{t-1})``, ``κ = dt/τ_syn``.
    Both start at 0 with each sample.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.spiking import readout_step
    >>> r = torch.zeros(1)
    >>> for t, s in enumerate([1.0, 0.0, 1.0, 1.0], 1):
    ...     r, k = readout_step(r, torch.tensor([s]), t, "count")
    >>> r.item(), k
    (0.75, 0.25)
    """
    if spike_z == "count":
        k = 1.0 / step
    elif spike_z == "trace":
        k = dt / tau_syn
    else:
        raise ValueError(f"unknown spike_z {spike_z!r}; choose one of {', '.join(SPIKE_Z)}")
    return trace + k * (spikes - trace), k
