"""The ceiling of the ``features`` memory on the Fig 3 task: its closed form with exact kernels (D → ∞).

Held-out correlation with the buffer's ξ of the window shape alone (box, 1-3 cascaded traces), for the
``paper`` and ``first-term`` variants: ``python scripts/feature_memory_ceiling.py`` (needs MNIST).
"""
import torch

from ibhebb.app.fig3 import fig3_stream
from ibhebb.functional.kernels import kernel_matrix, kernel_row
from ibhebb.functional.traces import trace_signal, trace_weights, window_surprises
from ibhebb.reservoir.config import Fig3Config, load
from ibhebb.reservoir.stream import fit_scores, window_targets

cfg = load(Fig3Config, "fig3-reservoir", ["task.epochs=1"])
t = cfg.task
stream = fig3_stream(cfg)
dx, dy, dz = stream["dims"]
inp = stream["inputs"]
x, y, z = inp[:, :dx], inp[:, dx : dx + dy], inp[:, dx + dy :]
S, N = len(inp), t.window
Kx, Ky = kernel_matrix(x, t.sigmas[0]), kernel_matrix(y, t.sigmas[1])
box = torch.zeros(S, dtype=torch.float64)
box[: N - 1] = 1 / N
windows = {"box (arrival surprise)": box, **{f"{s} trace stage(s)": trace_weights(N, S, stages=s) for s in (1, 2, 3)}}
for variant in ("paper", "first-term"):
    tgt = torch.zeros(S, dz, dtype=torch.float64)
    tgt[N - 1 :] = window_targets(x, y, z, window=N, gamma=t.gamma, sigmas=t.sigmas, variant=variant)
    for name, w in windows.items():
        s = window_surprises(Kx, Ky, w, window=N, gamma=t.gamma)
        out = torch.zeros(S, dz, dtype=torch.float64)
        for i in range(N - 1, S):
            kz0 = kernel_row(z[:i], z[i : i + 1], t.sigmas[2]).flip(-1)
            out[i] = trace_signal(kz0, z[i], z[:i].flip(0), s[i], s[:i].flip(0), w[:i], window=N, sigma_z=t.sigmas[2],
                                  variant=variant)
        a, b = stream["test"]
        sc = fit_scores(out[a:b, None], tgt[a:b, None])
        print(f"{variant:10} {name:24} held-out corr {sc['correlation'][0]:.3f}  NMSE {sc['nmse'][0]:.3f}")
