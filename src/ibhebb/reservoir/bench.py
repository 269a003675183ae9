"""Time per reservoir step (eq 8 + readout + one LMS/RLS update), median of repeated blocks."""
from __future__ import annotations

import statistics
import time

import torch

from .dynamics import Reservoir
from .readout import make_readout


@torch.no_grad()
def time_step(units: int = 2000, learner: str = "rls", *, inputs: int = 804, outputs: int = 10, groups: int = 1,
              device: str = "cpu", dtype=torch.float32, steps: int = 200, repeats: int = 5) -> dict:
    """Seconds per step of one held sample's loop body: reservoir step, readout, ``partial_fit``.

    Returns the median and all block timings (``steps`` steps per block, after one warm-up block).
    """
    res = Reservoir(units, inputs, outputs, groups=groups, seed=0).to(device, dtype)
    readout = make_readout(learner, groups, units, outputs, dtype=dtype, device=device)
    state = res.initial_state(1)
    drive = res.input_drive(torch.rand(groups, 1, inputs, device=device, dtype=dtype))
    r_o = torch.zeros(groups, 1, outputs, device=device, dtype=dtype)
    target = torch.randn(groups, outputs, device=device, dtype=dtype) * 0.1
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    blocks = []
    for b in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            res(drive, r_o, state)
            torch.bmm(state.r, readout.weight.transpose(1, 2), out=r_o)
            readout.partial_fit(state.r[:, 0], target)
        sync()
        if b:
            blocks.append((time.perf_counter() - t0) / steps)
    return {"units": units, "learner": learner, "device": str(device), "dtype": str(dtype), "groups": groups,
            "threads": torch.get_num_threads(), "median_s": statistics.median(blocks), "blocks_s": blocks}
