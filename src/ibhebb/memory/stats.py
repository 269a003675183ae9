"""Running comparison of a memory's ξ with the true ξ of a buffer: Pearson correlation and normalised MSE per layer."""
from __future__ import annotations

import torch
from torch import Tensor


class SignalStats:
    """Sums ``n, Σa, Σb, Σa², Σb², Σab`` per layer, pooled over time steps, replicas and neurons.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.memory.stats import SignalStats
    >>> st = SignalStats()
    >>> st.add([torch.tensor([1.0, 2.0, 3.0])], [torch.tensor([2.0, 4.0, 6.0])])
    >>> st.summary()["xi_correlation"]
    [1.0]
    """

    def __init__(self) -> None:
        self.sums: Tensor | None = None

    @torch.no_grad()
    def add(self, xis: list[Tensor], true: list[Tensor]) -> None:
        if self.sums is None:
            self.sums = torch.zeros(len(xis), 6, dtype=torch.float64)
        for l, (a, b) in enumerate(zip(xis, true)):
            a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
            self.sums[l] += torch.stack([torch.tensor(float(a.numel()), dtype=torch.float64), a.sum(), b.sum(),
                                         (a * a).sum(), (b * b).sum(), (a * b).sum()])

    def summary(self) -> dict:
        """Per layer since the last call (then cleared): ``xi_correlation``, ``xi_nmse``, ``xi_samples``."""
        if self.sums is None:
            return {}
        n, sa, sb, saa, sbb, sab = self.sums.T
        cov, va, vb = sab / n - sa * sb / n**2, saa / n - (sa / n) ** 2, sbb / n - (sb / n) ** 2
        corr = cov / (va * vb).sqrt().clamp_min(1e-300)
        nmse = (saa - 2 * sab + sbb) / n / vb.clamp_min(1e-300)
        self.sums = None
        return {"xi_correlation": corr.tolist(), "xi_nmse": nmse.tolist(), "xi_samples": n.long().tolist()}
