"""Working memory ``reservoir``: ξ read out of frozen, pre-trained reservoirs (MATH §4).

One reservoir per hidden layer (a bank, see :mod:`ibhebb.reservoir`), loaded
from the file ``rule.reservoir`` that ``ibhebb reservoir pretrain`` writes,
never trained during the run. Every replica of the network drives its own
copy of the state (``B = R`` streams through the same weights) with
``r_i = [x_0; y_0; z_0^ℓ]``.

Time: the reservoir runs its own ``T_r`` Euler steps per sample (the file's
``steps``), spread over the network's presentation of the sample: each call of
:meth:`signals` (one per network time step, ``T`` for a leaky network, 1 for
an MLP) advances it by ``max(1, T_r // T)`` steps with the current ``z_0^ℓ``,
then reads ``ξ^ℓ`` out. The state carries over from sample to sample.

What else is kept: a ``buffer`` window of the last ``N`` samples
``(x, y, z)`` (:class:`~ibhebb.memory.window.WindowMemory`). It gives the
readout layer its window for the delta rule, decides ``ready`` (so a run with
a reservoir starts learning at the same sample as one with a buffer), and its
true ξ is compared with the reservoir's: :meth:`diagnostics` returns the
Pearson correlation and normalised MSE per layer since the last call (pooled
over time steps, replicas and neurons).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional.reservoir import ReservoirState, reservoir_inputs, uniform_noise_
from ..reservoir.dynamics import Reservoir, stream_generators
from ..reservoir.file import load_reservoir_file
from .stats import SignalStats
from .window import WindowMemory


def check_reservoir_config(cfg) -> None:
    """Refuse a config whose reservoir file is missing or was trained for another rule or network."""
    r = cfg.rule
    state = load_reservoir_file(r.reservoir)
    mismatches = [
        f"{key} {state[key]} != {mine}"
        for key, mine in (("hidden", list(cfg.model.hidden)), ("window", r.window), ("gamma", r.gamma),
                          ("sigmas", list(r.sigmas)), ("variant", r.variant))
        if state[key] != mine
    ]
    if mismatches:
        raise ConfigError(f"rule.reservoir = {r.reservoir!r} was pre-trained for another setting: {'; '.join(mismatches)}")


class ReservoirMemory(nn.Module):
    """ξ^ℓ from the frozen readouts of a bank of pre-trained reservoirs.

    Parameters
    ----------
    path : str
        A file written by ``ibhebb reservoir pretrain``.
    window : int
        ``N`` of the rule (must match the file's).

    Examples
    --------
    >>> from ibhebb.memory import make_memory
    >>> mem = make_memory("reservoir", 8, reservoir="runs/reservoir-mnist.pt")  # doctest: +SKIP
    >>> xis, h, y = mem.signals(model, x, y1, zs, gamma=2.0, sigmas=(0.5, 0.1, 1.0), variant="paper")  # doctest: +SKIP
    """

    mode = "reservoir"

    def __init__(self, path: str | Path, window: int, sigmas=(0.5, 0.1, 1.0)):
        super().__init__()
        state = load_reservoir_file(path)
        if state["window"] != window:
            raise ConfigError(f"rule.reservoir = {str(path)!r} was pre-trained for N = {state['window']}, not {window}")
        h = state["hyper"]
        self.reservoir = Reservoir(h["units"], h["in_features"], h["out_features"], groups=h["groups"], lr=h["lr"],
                                   sr=h["sr"], noise_hidden=h["noise_hidden"], seed=h["seed"], connectivity=1.0)
        self.reservoir.to(state["readout"].dtype)  # the file's precision (load_state_dict keeps the buffers' dtype)
        self.reservoir.load_state_dict(state["reservoir"])
        self.register_buffer("readout", state["readout"].clone())
        self.register_buffer("target_scale", torch.tensor(state["target_scale"], dtype=state["readout"].dtype))
        self.buffer = WindowMemory(window, "buffer", sigmas)
        self.window, self.steps = window, int(state["steps"])
        self.feedback, self.noise_out = bool(state["feedback"]), float(state["noise_out"])
        self.x_dim, self.classes, self.hidden = state["x_dim"], state["classes"], list(state["hidden"])
        self.path = str(path)
        self.state: tuple[Tensor, Tensor, Tensor] | None = None  # u, r, r_o: (L, R, ·)
        self._stats = SignalStats()
        self._noise_gens: list[torch.Generator] = []  # the readout noise's, one per replica

    def random_state(self) -> dict:
        """The readout noise's generator states, one per replica drawn so far; checkpoints save them."""
        return {"noise": [g.get_state() for g in self._noise_gens]}

    def set_random_state(self, state: dict) -> None:
        self._noise_gens = stream_generators([], len(state["noise"]), self.reservoir.seed + 2, self.readout.device)
        for g, saved in zip(self._noise_gens, state["noise"]):
            g.set_state(saved.cpu())

    # -- the WindowMemory interface --------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.buffer.ready

    @property
    def count(self) -> Tensor:
        return self.buffer.count

    def reset(self) -> None:
        """Empty the window (the reservoirs' state runs on: it is the memory's own dynamics)."""
        self.buffer.reset()

    def push(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        self.buffer.push(x, y, zs)

    def _inputs(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> Tensor:
        return reservoir_inputs(x, y, zs, self.reservoir.in_features, self.reservoir.w_in.dtype)

    def _check_dims(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        dims = (x.shape[-1], y.shape[-1], [z.shape[-1] for z in zs])
        if dims != (self.x_dim, self.classes, self.hidden):
            raise ConfigError(
                f"rule.reservoir = {self.path!r} was pre-trained for inputs {self.x_dim}, classes {self.classes}, "
                f"hidden {self.hidden}; this network has {dims[0]}, {dims[1]}, {dims[2]}"
            )

    @torch.no_grad()
    def advance(self, x: Tensor, y: Tensor, zs: list[Tensor], steps: int) -> list[Tensor]:
        """Run the bank ``steps`` Euler steps on the current sample; ξ^ℓ ``(R, d_ℓ)`` per layer."""
        res = self.reservoir
        R = zs[0].shape[0]
        if self.state is None or self.state[0].shape[1] != R:
            self._check_dims(x, y, zs)
            s0 = res.initial_state(R)
            self.state = (s0.u, s0.r, res.w_rec.new_zeros(res.groups, R, self.readout.shape[1]))
        u, r, r_o = self.state
        state = ReservoirState(u, r)
        drive = res.input_drive(self._inputs(x, y, zs))
        for _ in range(steps):
            res(drive, r_o if self.feedback else None, state)
            torch.bmm(r, self.readout.transpose(1, 2), out=r_o)
            if self.noise_out > 0:
                self._noise_gens = stream_generators(self._noise_gens, R, self.reservoir.seed + 2, r_o.device)
                r_o.add_(uniform_noise_(torch.empty_like(r_o), self.noise_out, self._noise_gens[:R]))
        return [r_o[l, :, :d] / self.target_scale[l] for l, d in enumerate(self.hidden)]

    def signals(
        self, model: nn.Module, x: Tensor, y: Tensor, zs: list[Tensor], *, gamma: float, sigmas, variant: str
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """As :meth:`WindowMemory.signals`: ξ^ℓ ``(R, d_ℓ)`` from the reservoirs, the buffer's readout window."""
        steps = max(1, self.steps // int(getattr(model, "steps", 1)))
        xis = [xi.to(z.dtype) for xi, z in zip(self.advance(x, y, zs, steps), zs)]
        true, h, yw = self.buffer.signals(model, x, y, zs, gamma=gamma, sigmas=sigmas, variant=variant)
        self._stats.add(xis, true)
        return xis, h, yw

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics(self) -> dict:
        """Per layer, since the last call: correlation of reservoir ξ with the buffer's true ξ, and NMSE."""
        return self._stats.summary()

    # -- checkpoints ----------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"state": self.state, "stats": self._stats.sums}

    def set_extra_state(self, extra: dict) -> None:
        self.state = None if extra["state"] is None else tuple(extra["state"])
        self._stats.sums = extra["stats"]
