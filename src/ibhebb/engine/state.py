"""Move an :class:`~.step.EngineState` between the engine and the modules that own the truth.

The model's parameters are used in place (the state's weights *are* their
storage); the optimiser's moments are its own state tensors (created as torch
would create them before its first step); the window and the step count are
copied in at the start of an epoch and written back at its end, so
``checkpoint.pt`` holds everything and a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..functional.biohsic import WindowState, window_state, window_state_of
from .step import EngineState, FeatureTensors, ReservoirTensors, StepSpec


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's optimisers give their ``step`` tensors."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _group_of(optimizer: torch.optim.Optimizer, p: Tensor) -> dict:
    for g in optimizer.param_groups:
        if any(q is p for q in g["params"]):
            return g
    raise ValueError("a model parameter is not in the optimiser")


def _window(memory):
    """The window that holds ``x, y, z``: the memory itself, or a ``ReservoirMemory``'s buffer."""
    return getattr(memory, "buffer", memory)


def _reservoir(memory, layers, replicas: int) -> ReservoirTensors:
    """A ``ReservoirMemory``'s bank and a copy of its state (fresh, as its own loop starts one, if it has none yet)."""
    res = memory.reservoir
    dims = (layers[0].in_features, layers[-1].out_features, [layer.out_features for layer in layers[:-1]])
    if dims != (memory.x_dim, memory.classes, memory.hidden):
        raise ValueError(
            f"rule.reservoir = {memory.path!r} was pre-trained for inputs {memory.x_dim}, classes {memory.classes}, "
            f"hidden {memory.hidden}; this network has {dims[0]}, {dims[1]}, {dims[2]}"
        )
    if memory.state is None or memory.state[0].shape[1] != replicas:
        s0 = res.initial_state(replicas)
        state = (s0.u, s0.r, res.w_rec.new_zeros(res.groups, replicas, memory.readout.shape[1]))
    else:
        state = tuple(t.clone() for t in memory.state)
    stats = torch.zeros(len(memory.hidden), 6, dtype=torch.float64, device=res.w_rec.device)
    return ReservoirTensors(res.w_rec, res.w_in, res.w_fb, memory.readout, memory.target_scale, *state, stats)


def _features(memory, layers, replicas: int, like: Tensor) -> FeatureTensors:
    """A ``FeatureMemory``'s feature weights and its traces themselves (built empty, as its first push builds them)."""
    if memory.traces is None or memory.traces[3].shape[1] != replicas:
        memory._build(like.new_zeros(1, layers[0].in_features), like.new_zeros(1, layers[-1].out_features),
                      [like.new_zeros(replicas, 1, layer.out_features) for layer in layers[:-1]])
    omega = tuple(o.to(like.dtype).contiguous() for o in memory.omega)
    t1, tx, ty, *fast = memory.traces
    return FeatureTensors(omega, t1, tx, ty, tuple(fast))


def bind(spec: StepSpec, model, memory, optimizer: torch.optim.Optimizer) -> tuple[EngineState, int]:
    """The state for training ``model`` from where ``memory`` and ``optimizer`` stand; also the memory's count."""
    owner, memory = memory, _window(memory)
    layers = model.layers()
    weights = tuple(layer.weight.detach() for layer in layers)
    biases = tuple(layer.bias.detach() for layer in layers) if layers[0].bias is not None else ()
    params = [p for layer in layers for p in (layer.weight, layer.bias) if p is not None]
    ref = weights[0]
    f64 = dict(device=ref.device, dtype=torch.float64)
    moments, lrs, wds, steps = [], [], [], set()
    keys = {"adamw": ("exp_avg", "exp_avg_sq"), "adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
    keys = keys[spec.optim.name][: spec.optim.moments]
    for p in params:
        state = optimizer.state[p]
        for k in keys:
            if state.get(k) is None:
                state[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if spec.optim.name != "sgd":
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            steps.add(float(state["step"]))
        moments.append(tuple(state[k] for k in keys))
        group = _group_of(optimizer, p)
        lrs.append(torch.tensor(float(group["lr"]), **f64))
        wds.append(torch.tensor(float(group["weight_decay"]), **f64))
    if len(steps) > 1:
        raise ValueError("the optimiser's parameters are at different steps")
    t = steps.pop() if steps else 0.0
    step = torch.tensor([t], **f64)
    b1, b2 = spec.optim.betas if spec.optim.name != "sgd" else (1.0, 1.0)
    powers = torch.tensor([b1**t, b2**t], **f64)
    keeps_z = spec.memory in ("buffer", "reservoir", "features")
    count = int((owner if spec.memory == "features" else memory).count)
    if spec.memory == "features" or memory.state is None:  # features: a window kept for the step's layout, never read
        dims = [layer.out_features for layer in layers[:-1]] if keeps_z else []
        win = window_state(spec.window, layers[0].in_features, layers[-1].out_features, z_dims=dims, replicas=ref.shape[0], like=ref)
    else:  # the kernel matrices rebuilt from the samples (a checkpoint's window then continues bit for bit)
        st = memory.state
        win = window_state_of(st.x.clone(), st.y.clone(), tuple(z.clone() for z in st.z), spec.sigmas)
    reservoir = _reservoir(owner, layers, ref.shape[0]) if spec.memory == "reservoir" else None
    features = _features(owner, layers, ref.shape[0], ref) if spec.memory == "features" else None
    st = EngineState(
        weights, biases, tuple(moments), tuple(lrs), tuple(wds), step, powers, *win, reservoir, features,
    )
    return st, count


def unbind(spec: StepSpec, st: EngineState, count: int, model, memory, optimizer: torch.optim.Optimizer) -> None:
    """Write the window, its count, the step count (and the reservoir's state and scores) back to ``memory`` and ``optimizer``."""
    if st.reservoir is not None:
        res = st.reservoir
        memory.state = (res.u.clone(), res.r.clone(), res.r_out.clone())
        stats = res.stats.cpu()
        memory._stats.sums = stats.clone() if memory._stats.sums is None else memory._stats.sums + stats
    if st.features is not None:  # its traces were updated in place
        memory._cur = None
        memory._weigh()
        memory.count.fill_(count)
    else:
        _unbind_window(st, count, memory)
    optimizer._opt_called = True  # it did step (through the engine): no "scheduler before optimizer" warning
    if spec.optim.name != "sgd":
        step = float(st.step)
        params = [p for layer in model.layers() for p in (layer.weight, layer.bias) if p is not None]
        for p in params:
            optimizer.state[p]["step"] = torch.tensor(step, dtype=_scalar_dtype())


def _unbind_window(st: EngineState, count: int, memory) -> None:
    memory = _window(memory)
    memory.state = WindowState(st.past_x.clone(), st.past_y.clone(), tuple(z.clone() for z in st.past_z), st.kx.clone(), st.ky.clone())
    memory.count.fill_(count)
