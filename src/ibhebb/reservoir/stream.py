"""Driving a reservoir bank with a stream of held samples, with the readout learning online.

Each sample ``s`` of the stream is held for ``steps`` Euler steps: its input
``r_i`` is fixed, the reservoir integrates, the readout ``r_o = W_o r + ζ_o``
is fed back, and on the samples marked ``learn`` the readout takes one
``partial_fit`` step per Euler step towards the sample's target ξ.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..functional.signals import global_signal
from .dynamics import Reservoir
from .readout import Readout


def block_scaling(dims: list[int], scales: list[float]) -> Tensor:
    """Per-column input scaling for an input made of blocks: block ``b`` gets ``scales[b] / sqrt(dims[b])``.

    So each block drives a unit with about the same variance whatever its dimension.
    """
    return torch.cat([torch.full((d,), s / max(d, 1) ** 0.5) for d, s in zip(dims, scales)])


def window_targets(x: Tensor, y: Tensor, z: Tensor, *, window: int, gamma: float, sigmas, variant: str, chunk: int = 512) -> Tensor:
    """ξ of every full window of a stream: ``x`` ``(S, d_x)``, ``y`` ``(S, C)``, ``z`` ``(S, d_z)``.

    Row ``t`` of the result ``(S - N + 1, d_z)`` is ξ for stream sample ``t + N - 1``
    with the window of samples ``t … t + N - 1`` (:func:`ibhebb.functional.signals.global_signal`).
    """
    out = []
    n = x.shape[0] - window + 1
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        sl = slice(i, j + window - 1)
        xw = x[sl].unfold(0, window, 1).transpose(-1, -2)
        yw = y[sl].unfold(0, window, 1).transpose(-1, -2)
        zw = z[sl].unfold(0, window, 1).transpose(-1, -2)
        out.append(global_signal(xw, yw, zw, gamma=gamma, sigmas=tuple(sigmas), variant=variant))
    return torch.cat(out, 0)


@torch.no_grad()
def run_stream(
    reservoir: Reservoir,
    readout: Readout,
    inputs: Tensor,
    targets: Tensor | None = None,
    *,
    steps: int,
    learn: Tensor | None = None,
    record: Tensor | None = None,
    noise_out: float = 0.0,
    feedback: bool = True,
    progress: bool = True,
    desc: str = "reservoir",
) -> Tensor | None:
    """Run one stream through a bank of ``G`` reservoirs (one stream each, ``B = 1``).

    Parameters
    ----------
    inputs : ``(S, G, in_features)`` (or ``(S, 1, in)`` shared by the bank)
    targets : ``(S, G, m)``; needed where ``learn`` is set.
    steps : ``T``, Euler steps each sample is held.
    learn, record : bool ``(S,)``
        Samples on which the readout learns / whose outputs are returned.
    noise_out : ``ε_o`` of the readout noise ``ζ_o``.
    feedback : feed ``r_o`` back through ``W_fb``.

    Returns
    -------
    The readout at every step of the recorded samples, ``(K, T, G, m)``, or None.
    """
    from tqdm.auto import tqdm

    dev, dtype = reservoir.w_rec.device, reservoir.w_rec.dtype
    G, m = reservoir.groups, readout.weight.shape[1]
    S = inputs.shape[0]
    state = reservoir.initial_state(1)
    r_o = torch.zeros(G, 1, m, device=dev, dtype=dtype)
    noise = torch.empty_like(r_o)
    gen = torch.Generator(device=dev).manual_seed(reservoir.seed + 2)
    learn_list = learn.tolist() if learn is not None else [False] * S
    rec_list = record.tolist() if record is not None else [False] * S
    out = torch.empty(sum(rec_list), steps, G, m, device=dev, dtype=dtype) if any(rec_list) else None
    k = 0
    for s in tqdm(range(S), desc=desc, unit="sample", disable=not progress, mininterval=1.0, leave=False):
        r_in = inputs[s].to(dev, dtype).expand(G, -1).unsqueeze(1)
        drive = reservoir.input_drive(r_in)
        tgt = targets[s].to(dev, dtype) if learn_list[s] else None
        for t in range(steps):
            reservoir(drive, r_o if feedback else None, state)
            torch.bmm(state.r, readout.weight.transpose(1, 2), out=r_o)
            if rec_list[s]:
                out[k, t] = r_o[:, 0]
            if tgt is not None:
                readout.partial_fit(state.r[:, 0], tgt)
            if noise_out > 0:
                r_o.add_(noise.uniform_(-noise_out, noise_out, generator=gen))
        k += rec_list[s]
    return out


def fit_scores(pred: Tensor, target: Tensor) -> dict[str, list[float]]:
    """Per group: normalised MSE ``mean((p - ξ)²) / var(ξ)`` and Pearson correlation, over all other axes.

    ``pred`` ``(..., G, m)``, ``target`` broadcastable to it.
    """
    target = target.expand_as(pred)
    p = pred.movedim(-2, 0).reshape(pred.shape[-2], -1).double()
    t = target.movedim(-2, 0).reshape(pred.shape[-2], -1).double()
    nmse = ((p - t) ** 2).mean(1) / t.var(1, unbiased=False).clamp_min(1e-300)
    pc, tc = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    corr = (pc * tc).sum(1) / ((pc.square().sum(1) * tc.square().sum(1)).sqrt().clamp_min(1e-300))
    return {"nmse": nmse.tolist(), "correlation": corr.tolist()}
