"""The rules on a user's own ``nn.Sequential``: :class:`BioHSICLearner` and :class:`PHSICLearner`.

A learner reads a plain network — an ``nn.Sequential`` (nested ones too) of
``nn.Linear``, ``nn.Conv2d``, ``nn.AvgPool2d``, ``nn.MaxPool2d``,
``nn.Flatten``, ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Identity`` and
``nn.LayerNorm`` (parameter-free or affine) — as layers, and writes each
update into the ``.grad`` of the network's own parameters, so the user's
``torch.optim`` optimiser and scheduler apply it. The network stays what it
was: ``net(x)`` and ``net.state_dict()`` are untouched, nothing is
registered on it.

The layers
----------
The **readout** is the last ``nn.Linear``. Every ``nn.Linear`` or
``nn.Conv2d`` before it starts a **hidden layer** ``ℓ``, which runs up to the
next one: its map ``a = W ⋆ h + b``, then the modules after it (its
activation, an optional LayerNorm, pooling, flatten), whose result is the
layer's output ``z^ℓ`` — what the layer's kernel sees. With
``z_after_pool=False`` the pooling and flatten modules that end a layer
start the next one instead (``z^ℓ`` is the map before pooling), as in
:class:`~ibhebb.models.CNN` with ``z_after_pool=False``; the network is the
same either way. Modules before the first map (e.g. ``nn.Flatten``) prepare
the input of the first layer.

The maths is the functional core's, with the user's weights seen with a
replica dimension of one (``weight.unsqueeze(0)``, a view):
:mod:`ibhebb.functional.layers` (the dense map, activations, LayerNorm and
their VJPs), :mod:`ibhebb.functional.conv` (convolution, pooling),
:mod:`ibhebb.functional.biohsic` through :class:`~ibhebb.memory.WindowMemory`
(the window, ξ, the readout's delta rule) and :mod:`ibhebb.functional.phsic`.

A module whose local Jacobian the learner cannot form (``nn.LSTM``,
``nn.BatchNorm2d``, ``nn.Dropout``, a strided convolution, …) is refused
when the learner is built, with one :class:`~ibhebb.errors.ConfigError`
line naming it.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from ibhebb.rules.learners import BioHSICLearner
>>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.LayerNorm(6, elementwise_affine=False), nn.Linear(6, 2))
>>> learner = BioHSICLearner(net, window=3)
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
>>> [learner.step(torch.randn(1, 4), torch.tensor([p % 2])) for p in range(4)]
[False, False, True, True]
>>> net[0].weight.grad.shape
torch.Size([6, 4])
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional.biohsic import readout_grads
from ..functional.conv import max_pool, max_pool_vjp, pool, pool_vjp, replica_conv2d, replica_conv2d_weight_grad
from ..functional.layers import activate, activation_vjp, affine, dense_param_grads, layernorm, layernorm_vjp
from ..functional.phsic import (
    KERNELS, label_kernel_matrix, layer_kernel_matrix, pair_objective, pair_third_factor, phsic_objective,
)
from ..functional.signals import VARIANTS
from ..memory.window import WINDOW_MODES, WindowMemory
from .baselines import replica_cross_entropy

SUPPORTED = "Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, ReLU, Tanh, Sigmoid, Identity, LayerNorm"
"""What every learner accepts (as the refusal message lists it)."""


# -- the operations a layer is made of ----------------------------------------------------------
# Tensors carry a leading replica dimension of 1 and a batch dimension: (1, B, ...).


class _Op:
    """A parameter-free or affine map ``o = f(i)`` with its VJP ``(∂o/∂i)ᵀ cot`` and its parameters' gradients."""

    pooling = False  # pooling and flatten: may start the next layer instead (z_after_pool=False)
    has_vjp = True

    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name

    def __call__(self, i: Tensor) -> Tensor:
        raise NotImplementedError

    def vjp(self, i: Tensor, o: Tensor, cot: Tensor) -> Tensor:
        raise NotImplementedError

    def param_grads(self, i: Tensor, o: Tensor, cot: Tensor) -> list[tuple[nn.Parameter, Tensor]]:
        return []


class _Activation(_Op):
    NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}

    def __init__(self, module, name):
        super().__init__(module, name)
        self.kind = self.NAMES[type(module)]

    def __call__(self, i):
        return activate(i, self.kind)

    def vjp(self, i, o, cot):
        return activation_vjp(i, o, cot, self.kind)


class _Autograd(_Op):
    """An elementwise activation without a VJP in the functional core: the pHSIC learner differentiates it by autograd."""

    TYPES = (nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus)
    has_vjp = False

    def __call__(self, i):
        return self.module(i)


class _LayerNorm(_Op):
    """``o = γ ∘ LN(i) + β`` over the last ``len(normalized_shape)`` dimensions (``γ``, ``β`` optional)."""

    def __init__(self, module, name):
        super().__init__(module, name)
        self.shape = tuple(module.normalized_shape)
        self.dims = tuple(range(-len(self.shape), 0))

    def _normalised(self, i: Tensor) -> Tensor:
        if tuple(i.shape[-len(self.shape):]) != self.shape:
            raise ConfigError(
                f"{self.name} (LayerNorm over {list(self.shape)}) receives samples of shape {list(i.shape[2:])}"
            )
        return layernorm(i, self.dims, self.module.eps)

    def __call__(self, i):
        n = self._normalised(i)
        w, b = self.module.weight, self.module.bias
        n = n if w is None else n * w
        return n if b is None else n + b

    def vjp(self, i, o, cot):
        if self.module.weight is not None:
            cot = cot * self.module.weight
        return layernorm_vjp(i, self._normalised(i), cot, self.dims, self.module.eps)

    def param_grads(self, i, o, cot):
        w, b = self.module.weight, self.module.bias
        lead = tuple(range(cot.dim() - len(self.shape)))
        out = []
        if w is not None:
            out.append((w, (cot * self._normalised(i)).sum(lead)))
        if b is not None:
            out.append((b, cot.sum(lead)))
        return out


def _square(value, what: str, name: str) -> int:
    """A pooling window or stride given as ``k`` or ``(k, k)``."""
    k = (value, value) if isinstance(value, int) else tuple(value)
    if len(k) != 2 or k[0] != k[1]:
        raise ConfigError(f"{name}: only square pooling is supported, got {what} {value}")
    return k[0]


class _Pool(_Op):
    """Average or max pooling over non-overlapping ``size × size`` blocks."""

    pooling = True

    def __init__(self, module, name):
        super().__init__(module, name)
        self.size = _square(module.kernel_size, "kernel_size", name)
        stride = _square(module.stride if module.stride is not None else module.kernel_size, "stride", name)
        padding = _square(module.padding, "padding", name)
        extra = getattr(module, "divisor_override", None) is not None or (
            isinstance(module, nn.MaxPool2d) and _square(module.dilation, "dilation", name) != 1
        )
        if stride != self.size or padding != 0 or module.ceil_mode or extra:
            raise ConfigError(
                f"{name} ({type(module).__name__}): only non-overlapping pooling is supported (stride = kernel_size, "
                "no padding, dilation, ceil_mode or divisor_override)"
            )
        self.max = isinstance(module, nn.MaxPool2d)

    def __call__(self, i):
        return max_pool(i, self.size) if self.max else pool(i, self.size)

    def vjp(self, i, o, cot):
        return max_pool_vjp(i, cot, self.size) if self.max else pool_vjp(cot, self.size, *i.shape[-2:])


class _Flatten(_Op):
    pooling = True

    def __init__(self, module, name):
        super().__init__(module, name)
        if module.start_dim != 1 or module.end_dim != -1:
            raise ConfigError(f"{name} (Flatten): only Flatten(start_dim=1, end_dim=-1) is supported")

    def __call__(self, i):
        return i.reshape(*i.shape[:2], -1)

    def vjp(self, i, o, cot):
        return cot.reshape(i.shape)


class _Map:
    """A layer's parametrised map ``a = W ⋆ h + b``: ``nn.Linear`` or ``nn.Conv2d`` with the weights seen as one replica."""

    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name
        self.conv = isinstance(module, nn.Conv2d)
        if self.conv:
            m = module
            if tuple(m.stride) != (1, 1) or tuple(m.dilation) != (1, 1) or m.groups != 1 or m.padding_mode != "zeros":
                raise ConfigError(
                    f"{name} (Conv2d): only stride 1, dilation 1, groups 1 and zero padding are supported"
                )
            if m.padding == "same":
                if any(k % 2 == 0 for k in m.kernel_size):
                    raise ConfigError(f"{name} (Conv2d): padding='same' needs an odd kernel_size")
                self.padding = tuple(k // 2 for k in m.kernel_size)
            else:
                self.padding = (0, 0) if m.padding == "valid" else tuple(m.padding)

    def weights(self) -> tuple[Tensor, Tensor | None]:
        b = self.module.bias
        return self.module.weight.unsqueeze(0), (None if b is None else b.unsqueeze(0))

    def __call__(self, h: Tensor) -> Tensor:
        w, b = self.weights()
        if self.conv:
            if h.dim() != 5:
                raise ConfigError(f"{self.name} (Conv2d) receives samples of shape {list(h.shape[2:])}, not (C, H, W)")
            return replica_conv2d(h, w, b, self.padding)
        if h.dim() != 3:
            raise ConfigError(
                f"{self.name} (Linear) receives samples of shape {list(h.shape[2:])}: put an nn.Flatten() before it"
            )
        return affine(h, w, b)

    def param_grads(self, h: Tensor, a_cot: Tensor) -> list[tuple[nn.Parameter, Tensor]]:
        m = self.module
        if self.conv:
            gw = replica_conv2d_weight_grad(h, a_cot, (1, *m.weight.shape), self.padding)
            gb = a_cot.sum((1, 3, 4))
        else:
            gw, gb = dense_param_grads(h, a_cot)
        return [(m.weight, gw)] + ([] if m.bias is None else [(m.bias, gb)])


class _Layer:
    """``z = post(map(pre(h)))``: fixed maps ``pre``, the parametrised ``map``, then the modules ``post`` that end the layer."""

    def __init__(self, pre: list[_Op], map_: _Map, post: list[_Op]):
        self.pre, self.map, self.post = pre, map_, post

    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(z, ins)``: the output and the inputs of the map and of every ``post`` module."""
        for op in self.pre:
            h = op(h)
        ins = [h]
        h = self.map(h)
        for op in self.post:
            ins.append(h)
            h = op(h)
        return h, ins

    def grads(self, ins: list[Tensor], z: Tensor, cot: Tensor) -> Iterator[tuple[nn.Parameter, Tensor]]:
        """``(∂z/∂θ)ᵀ cot`` for every parameter ``θ`` of the layer (its input held fixed)."""
        outs = ins[2:] + [z]
        for op, i, o in zip(reversed(self.post), reversed(ins[1:]), reversed(outs)):
            yield from op.param_grads(i, o, cot)
            cot = op.vjp(i, o, cot)
        yield from self.map.param_grads(ins[0], cot)


def _is_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` whose ``forward`` is the plain one (runs its children in order)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves(module: nn.Module, name: str) -> Iterator[tuple[nn.Module, str]]:
    for key, child in module.named_children():
        sub = f"{name}[{key}]"
        if _is_sequential(child):
            yield from _leaves(child, sub)
        else:
            yield child, sub


_OPS = [((nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity), _Activation), ((nn.LayerNorm,), _LayerNorm),
        ((nn.AvgPool2d, nn.MaxPool2d), _Pool), ((nn.Flatten,), _Flatten), (_Autograd.TYPES, _Autograd)]


def _parse(net: nn.Module, who: str, z_after_pool: bool, hand_vjp: bool) -> tuple[list[_Layer], _Layer]:
    """The hidden layers and the readout of ``net``; a module the learner cannot train is refused by name."""
    if not _is_sequential(net):
        raise ConfigError(f"{who} trains an nn.Sequential (nested ones too), got {type(net).__name__}")
    items: list[_Op | _Map] = []
    for module, name in _leaves(net, "net"):
        if type(module) in (nn.Linear, nn.Conv2d):
            items.append(_Map(module, name))
            continue
        kind = next((cls for types, cls in _OPS if type(module) in types), None)
        if kind is None or (hand_vjp and not kind.has_vjp):
            why = "its VJP is not in ibhebb.functional (PHSICLearner accepts it)" if kind else "no local Jacobian known"
            raise ConfigError(
                f"{who} cannot train {name} ({type(module).__name__}): {why}; supported layers: {SUPPORTED}"
            )
        items.append(kind(module, name))
    maps = [k for k, it in enumerate(items) if isinstance(it, _Map)]
    if not maps or items[maps[-1]].conv:
        found = f"{items[maps[-1]].name} (Conv2d)" if maps else "none"
        raise ConfigError(f"{who}: the network's last parametrised layer must be its readout, an nn.Linear; found {found}")
    after = [it for it in items[maps[-1] + 1:] if not (isinstance(it, _Activation) and it.kind == "identity")]
    if after:
        raise ConfigError(
            f"{who}: the readout is the last nn.Linear and gives the logits; {after[0].name} "
            f"({type(after[0].module).__name__}) after it is not supported"
        )
    if len(maps) < 2:
        raise ConfigError(f"{who} needs at least one hidden layer before the readout (the last nn.Linear)")
    layers, pre = [], items[: maps[0]]
    for start, stop in zip(maps, maps[1:]):
        post = items[start + 1: stop]
        cut = len(post)
        if not z_after_pool:
            while cut and post[cut - 1].pooling:
                cut -= 1
        layers.append(_Layer(pre, items[start], post[:cut]))
        pre = post[cut:]
    return layers, _Layer(pre, items[maps[-1]], [])


def _write_grads(grads) -> None:
    """Add each gradient (with or without its replica dimension of one) to its parameter's ``.grad``."""
    for p, g in grads:
        if not p.requires_grad:
            continue
        g = g.reshape(p.shape)
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)


class _Network:
    """The parsed network: what :class:`~ibhebb.memory.WindowMemory` calls ``model`` (``represent``)."""

    def __init__(self, layers: list[_Layer], readout: _Layer):
        self.layers, self.readout = layers, readout
        self.in_shape: tuple[int, ...] | None = None

    def present(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        """Every hidden layer's ``(z, ins)`` for a batch ``x`` ``(B, …)``, ``z`` ``(1, B, …)``."""
        self.in_shape = tuple(x.shape[1:])
        h, out = x.unsqueeze(0), []
        for layer in self.layers:
            h, ins = layer.forward(h)
            out.append((h, ins))
        return out

    def represent(self, xf: Tensor) -> list[Tensor]:
        """The hidden outputs ``(1, B, d_ℓ)`` (flattened) for flattened inputs ``xf`` ``(B, d_x)``."""
        zs = self.present(xf.reshape(xf.shape[0], *self.in_shape))
        return [z.reshape(1, z.shape[1], -1) for z, _ in zs]

    def readout_input(self, z: Tensor) -> Tensor:
        """The readout's input ``(1, B, d)`` from the last hidden output ``z`` ``(1, B, …)`` (its fixed maps applied)."""
        for op in self.readout.pre:
            z = op(z)
        return z.reshape(*z.shape[:2], -1)


def _check_sample(x: Tensor, y: Tensor) -> None:
    if x.dim() < 2 or x.shape[0] != 1 or tuple(y.shape) != (1,):
        raise ValueError(
            f"step takes one sample: x of shape (1, ...) and y of shape (1,), got {list(x.shape)} and {list(y.shape)}"
        )


class BioHSICLearner(nn.Module):
    """The three-factor HSIC-bottleneck rule (``biohsic``, MATH §3) on a user's ``nn.Sequential``, one sample a step.

    For the current sample and its window of the ``N - 1`` before it, each hidden
    layer's update is the VJP of its own output with the global signal ξ^ℓ of the
    window, ``g_θ = (∂z_0^ℓ/∂θ^ℓ)ᵀ ξ^ℓ`` (its input held fixed), and the readout's
    is the softmax delta rule over the window,
    ``g_W = (1/N) Σ_p (softmax(W h_p + b) - y_p) h_pᵀ``. :meth:`step` adds them to
    the parameters' ``.grad``; the user's optimiser steps them (``θ ← θ - η g``).

    Parameters
    ----------
    net : nn.Sequential
        The network (see :mod:`ibhebb.rules.learners` for what a layer is); referenced, not copied.
    window : int
        ``N``, samples in a window (current included); the first ``N - 1`` only fill it.
    gamma : float
        ``γ``, the weight of the label term.
    sigmas : (σ_x, σ_y, σ_z)
        Kernel widths of the inputs, the labels and every hidden layer.
    variant : {"paper", "first-term", "exact"}
        The ξ variant (:func:`~ibhebb.functional.signals.signal_from_kernels`).
    memory : {"buffer", "recompute"}
        The window's past outputs as they were (``buffer``) or recomputed with the current weights.
    z_after_pool : bool
        A layer's output is taken after the pooling that ends it (default), or before it.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from ibhebb.rules.learners import BioHSICLearner
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    >>> learner = BioHSICLearner(net, window=2, variant="exact", memory="recompute")
    >>> learner.step(torch.rand(1, 1, 8, 8), torch.tensor([0])), learner.step(torch.rand(1, 1, 8, 8), torch.tensor([2]))
    (False, True)
    >>> BioHSICLearner(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)))
    Traceback (most recent call last):
    ...
    ibhebb.errors.ConfigError: BioHSICLearner cannot train net[1] (BatchNorm1d): no local Jacobian known; supported layers: ...
    """

    def __init__(self, net: nn.Sequential, *, window: int = 8, gamma: float = 2.0,
                 sigmas: Sequence[float] = (0.5, 0.1, 1.0), variant: str = "paper", memory: str = "buffer",
                 z_after_pool: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown ξ variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if memory not in WINDOW_MODES:
            raise ConfigError(f"unknown window memory {memory!r}; choose one of {', '.join(WINDOW_MODES)}")
        if len(sigmas) != 3:
            raise ConfigError(f"sigmas are (σ_x, σ_y, σ_z), got {tuple(sigmas)}")
        object.__setattr__(self, "net", net)  # referenced, not owned: not in the learner's state_dict
        self.network = _Network(*_parse(net, type(self).__name__, z_after_pool, hand_vjp=True))
        self.gamma, self.sigmas, self.variant = float(gamma), tuple(float(s) for s in sigmas), variant
        self.n_classes = self.network.readout.map.module.out_features
        self.memory = WindowMemory(int(window), memory, self.sigmas)

    @property
    def ready(self) -> bool:
        """Whether the window is full, i.e. the next :meth:`step` writes an update."""
        return self.memory.ready

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor) -> bool:
        """Present one sample ``x`` ``(1, …)`` with class index ``y`` ``(1,)``; add its update to ``.grad``.

        Returns whether an update was written (``False`` while the window fills).
        """
        _check_sample(x, y)
        y = y.long()
        xf = x.reshape(1, -1)
        y1 = torch.nn.functional.one_hot(y, self.n_classes).to(xf.dtype)
        traces = self.network.present(x)
        zs = [z.reshape(1, 1, -1) for z, _ in traces]
        wrote = self.memory.ready
        if wrote:
            xis, zw, yw = self.memory.signals(
                self.network, xf, y1, zs, gamma=self.gamma, sigmas=self.sigmas, variant=self.variant
            )
            for layer, (z, ins), xi in zip(self.network.layers, traces, xis):
                _write_grads(layer.grads(ins, z, xi.reshape(z.shape)))
            last = traces[-1][0]
            hw = self.network.readout_input(zw.reshape(1, zw.shape[1], *last.shape[2:]))
            m = self.network.readout.map.module
            gw, gb = readout_grads(hw, yw, *self.network.readout.map.weights())
            _write_grads([(m.weight, gw)] + ([] if m.bias is None else [(m.bias, gb)]))
        self.memory.push(xf, y1, zs)
        return wrote


FORMS = ("batch", "pair", "running-mean")
"""The pHSIC forms a :class:`PHSICLearner` runs: eq 10 on a minibatch, its two-point online estimate (eqs 18–19),
or eq 20 online."""


class PHSICLearner(nn.Module):
    """The pHSIC rule of Pogodin & Latham (``phsic``, MATH §6) on a user's ``nn.Sequential``.

    Every hidden layer ``ℓ`` descends its own objective ``pHSIC(Z^ℓ, Z^ℓ) - γ pHSIC(Y, Z^ℓ)``
    (eq 9, :func:`~ibhebb.functional.phsic.phsic_objective`) with its input held fixed; the
    readout learns by cross-entropy on the last hidden output. The layer kernel is Gaussian,
    ``exp(-‖z_i - z_j‖² / 2σ²)``, or the cosine similarity; the label kernel compares centred
    one-hot labels.

    ``form="batch"`` (eq 10): :meth:`step` takes a minibatch ``x`` ``(B, …)``, ``y`` ``(B,)`` and
    writes the gradient of the objective on it. ``form="pair"`` (eqs 18–19): one sample a step,
    the objective's two-point estimate :func:`~ibhebb.functional.phsic.pair_objective` on the
    samples at ``t`` and ``t - Δt`` (the previous one's output recomputed with the current
    weights), the kernels' means replaced by running means of rate ``mean_rate``; the first
    sample writes nothing. ``form="running-mean"`` (eq 20, Gaussian kernel): one sample a step,
    the previous point in the Hebbian factor replaced by running means of activity,
    ``g_W = -M_{t,t-Δt} (f'(a_t) ∘ (z_t - μ_z)) (h_t - μ_h)ᵀ`` with
    ``M = -(γ k̊_y - 2 k̊_z) k(z_t, z_{t-Δt}) / σ²``
    (:func:`~ibhebb.functional.phsic.pair_third_factor`); it is written for layers that are a
    bias-free ``nn.Linear`` and one elementwise activation (as :class:`~ibhebb.models.PHSICMLP`).

    The gradients of the layer objectives are taken by autograd through the layer alone, so
    the elementwise activations without a hand-written VJP (``LeakyReLU``, ``ELU``, ``GELU``,
    ``SiLU``, ``Softplus``) are accepted here too. The grouped rules (eqs 13–18, 20–22) need
    the grouping of :class:`~ibhebb.models.PHSICMLP` and are not offered (nor ``form="split"``, eq 22,
    which is grouped only).

    Parameters
    ----------
    net : nn.Sequential
    gamma : float
    sigma : float
        ``σ`` of the Gaussian layer kernel.
    kernel : {"gaussian", "cossim"}
    form : {"batch", "pair", "running-mean"}
    mean_rate : float
        The online forms: rate of the running means of the kernels (and, ``running-mean``, of activity).
    z_after_pool : bool
        As for :class:`BioHSICLearner`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from ibhebb.rules.learners import PHSICLearner
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.1), nn.Linear(6, 3))
    >>> learner = PHSICLearner(net, gamma=2.0, sigma=1.0)
    >>> learner.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    True
    >>> net[0].weight.grad.shape, net[2].bias.grad.shape
    (torch.Size([6, 4]), torch.Size([3]))
    """

    ONLINE_STATE = ("prev_h", "prev_z", "prev_y", "mean_kz", "mean_ky", "mean_h", "mean_z")

    def __init__(self, net: nn.Sequential, *, gamma: float = 2.0, sigma: float = 1.0, kernel: str = "gaussian",
                 form: str = "batch", mean_rate: float = 0.01, z_after_pool: bool = True):
        super().__init__()
        if kernel not in KERNELS:
            raise ConfigError(f"unknown pHSIC kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        if form not in FORMS:
            raise ConfigError(
                f"PHSICLearner runs form {', '.join(repr(f) for f in FORMS)}, got {form!r} (the split form, eq 22, "
                "is grouped: it needs ibhebb's phsic-mlp model)"
            )
        object.__setattr__(self, "net", net)
        self.network = _Network(*_parse(net, type(self).__name__, z_after_pool, hand_vjp=False))
        self.gamma, self.sigma, self.kernel, self.form = float(gamma), float(sigma), kernel, form
        self.rate = float(mean_rate)
        self.n_classes = self.network.readout.map.module.out_features
        n = len(self.network.layers)
        if form == "running-mean":
            self._check_hebbian()
        self.prev_h: list[Tensor | None] = [None] * n  # pair: the layers' inputs of the previous sample
        self.prev_z: list[Tensor | None] = [None] * n  # running-mean: their outputs
        self.prev_y: Tensor | None = None
        self.mean_kz: list[Tensor | float] = [0.0] * n
        self.mean_ky: Tensor | float = 0.0
        self.mean_h: list[Tensor | None] = [None] * n  # running-mean: of the maps' inputs and the layers' outputs
        self.mean_z: list[Tensor | None] = [None] * n

    def _check_hebbian(self) -> None:
        if self.kernel != "gaussian":
            raise ConfigError("PHSICLearner form 'running-mean' (eq 20) is a Gaussian-kernel rule: use kernel='gaussian'")
        for layer in self.network.layers:
            m = layer.map
            if m.conv or m.module.bias is not None or len(layer.post) != 1 or not isinstance(
                    layer.post[0], (_Activation, _Autograd)):
                raise ConfigError(
                    f"PHSICLearner form 'running-mean' (eq 20) needs each hidden layer to be a bias-free nn.Linear "
                    f"and one activation; the layer of {m.name} is not"
                )

    def get_extra_state(self) -> dict:
        """The online state (``pair``), saved with the learner's ``state_dict``."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in ((k, getattr(self, k)) for k in self.ONLINE_STATE)}

    def set_extra_state(self, state: dict) -> None:
        for k in self.ONLINE_STATE:
            setattr(self, k, list(state[k]) if isinstance(state[k], list) else state[k])

    def _kernel(self, z: Tensor) -> Tensor:
        return layer_kernel_matrix(z.reshape(*z.shape[:2], -1), self.kernel, self.sigma)

    def _readout(self, h: Tensor, y: Tensor) -> None:
        with torch.enable_grad():
            logits = self.network.readout.map(self.network.readout_input(h.detach()))
            replica_cross_entropy(logits, y).backward()

    def step(self, x: Tensor, y: Tensor) -> bool:
        """Present a minibatch (``batch``) or one sample (``pair``); add the update to ``.grad``; return whether one was written."""
        y = y.long()
        if self.form == "batch":
            self._batch(x, y)
            return True
        _check_sample(x, y)
        return self._pair(x, y) if self.form == "pair" else self._running_mean(x, y)

    def _batch(self, x: Tensor, y: Tensor) -> None:
        ky = label_kernel_matrix(y, self.n_classes, x.dtype)
        h = x.detach().unsqueeze(0)
        for layer in self.network.layers:
            with torch.enable_grad():
                z, _ = layer.forward(h)
                phsic_objective(self._kernel(z), ky, self.gamma).sum().backward()
            h = z.detach()
        self._readout(h, y)

    def _pair(self, x: Tensor, y: Tensor) -> bool:
        ready = self.prev_y is not None
        ky = label_kernel_matrix(torch.cat([y, self.prev_y]), self.n_classes, x.dtype)[0, 1] if ready else None
        h = x.detach().unsqueeze(0)
        for i, layer in enumerate(self.network.layers):
            with torch.enable_grad():
                z, _ = layer.forward(h)
                if ready:
                    z_prev, _ = layer.forward(self.prev_h[i])
                    kz = self._kernel(torch.cat([z, z_prev], 1))[..., 0, 1]
                    pair_objective(kz, ky, self.mean_kz[i], self.mean_ky, self.gamma).sum().backward()
                    self.mean_kz[i] = self.mean_kz[i] + self.rate * (kz.detach() - self.mean_kz[i])
            self.prev_h[i] = h
            h = z.detach()
        if ready:
            self.mean_ky = self.mean_ky + self.rate * (ky - self.mean_ky)
            self._readout(h, y)
        self.prev_y = y.detach()
        return ready

    @torch.no_grad()
    def _running_mean(self, x: Tensor, y: Tensor) -> bool:
        ready = self.prev_y is not None
        ky = label_kernel_matrix(torch.cat([y, self.prev_y]), self.n_classes, x.dtype)[0, 1] if ready else None
        h = x.unsqueeze(0)
        for i, layer in enumerate(self.network.layers):
            z, (h_map, a) = layer.forward(h)
            if ready:
                kz = self._kernel(torch.cat([z, self.prev_z[i]], 1))[..., 0, 1]
                M = pair_third_factor(kz, ky, self.mean_kz[i], self.mean_ky, self.gamma, self.sigma).reshape(-1, 1, 1)
                a_cot = -M * _slope(layer.post[0], a) * (z - self.mean_z[i])
                _write_grads(layer.map.param_grads(h_map - self.mean_h[i], a_cot))
                self.mean_kz[i] = self.mean_kz[i] + self.rate * (kz - self.mean_kz[i])
            self.prev_z[i] = z
            if self.mean_h[i] is None:
                self.mean_h[i], self.mean_z[i] = h_map.clone(), z.clone()
            else:
                self.mean_h[i] = self.mean_h[i] + self.rate * (h_map - self.mean_h[i])
                self.mean_z[i] = self.mean_z[i] + self.rate * (z - self.mean_z[i])
            h = z
        if ready:
            self.mean_ky = self.mean_ky + self.rate * (ky - self.mean_ky)
            self._readout(h, y)
        self.prev_y = y.detach()
        return ready


def _slope(op: _Op, a: Tensor) -> Tensor:
    """``f'(a)`` of an elementwise activation, by autograd."""
    with torch.enable_grad():
        a = a.detach().requires_grad_()
        return torch.autograd.grad(op(a).sum(), a)[0]
