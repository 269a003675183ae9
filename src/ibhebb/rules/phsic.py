"""pHSIC rules of Pogodin & Latham (seed 001 §4; MATH §6), in three forms.

Every hidden layer ``ℓ`` descends its own objective
``pHSIC(Z^ℓ, Z^ℓ) - γ pHSIC(Y, Z^ℓ)`` (eq 9) with its input held fixed; the
readout learns by cross-entropy on the detached last hidden output. The
layer kernel (``rule.kernel``: Gaussian of width ``σ_z = rule.sigmas[2]`` or
cosine similarity) acts on ``z`` or, with ``rule.grouped``, on the group
code ``v`` of eq 14 (the model's grouping).

``rule.form`` picks how:

- ``batch`` — eq 10: the gradient of the objective on a minibatch (what the
  authors ran);
- ``pair`` — online, one sample at a time: the two-point estimate of eq 10 on
  the samples at ``t`` and ``t - Δt`` (:func:`~ibhebb.phsic.pair_objective`),
  kernel means replaced by running means; for a Gaussian kernel and a linear
  layer it is eq 19 (eq 18 with grouping and divisive normalisation);
- ``running-mean`` — online, eq 20 (plain Gaussian kernel): the previous
  point in the Hebbian factor is replaced by the running mean of activity,
  ``ΔW = η M_{t,t-Δt} (f'(a_t) ∘ (z_t - μ_z)) (h_t - μ_h)ᵀ`` with
  ``M = -(γ k̊_y - 2 k̊_z) k(z_t, z_{t-Δt}) / σ²``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..errors import ConfigError
from ..phsic import label_kernel_matrix, layer_kernel_matrix, pair_objective, phsic_objective
from .base import Rule, register_rule
from .local import local_forward, readout_step, require_static_model


@register_rule("phsic")
class PHSIC(Rule):
    def __init__(self, model, config):
        super().__init__(model, config)
        self.form = config.form
        self.online = self.form != "batch"
        self.kernel, self.sigma, self.gamma = config.kernel, float(config.sigmas[2]), float(config.gamma)
        self.grouped, self.rate = config.grouped, float(config.mean_rate)
        n = len(model.hidden)
        # online state: the previous sample's layer inputs / outputs and label, and running means
        self.prev_h: list[Tensor | None] = [None] * n
        self.prev_z: list[Tensor | None] = [None] * n
        self.prev_y: Tensor | None = None
        self.mean_kz: list[Tensor | float] = [0.0] * n
        self.mean_ky: Tensor | float = 0.0
        self.mean_h: list[Tensor | None] = [None] * n
        self.mean_z: list[Tensor | None] = [None] * n

    @classmethod
    def check_config(cls, cfg) -> None:
        require_static_model(cfg, "phsic")
        r = cfg.rule
        if r.grouped and cfg.model.kind != "phsic-mlp":
            raise ConfigError("rule.grouped = true needs model.kind = 'phsic-mlp' (the model holds the grouping)")
        if r.form == "running-mean" and (r.kernel != "gaussian" or r.grouped or cfg.model.kind != "phsic-mlp"):
            raise ConfigError(
                "rule.form = 'running-mean' (eq 20) is the plain Gaussian rule: it needs rule.kernel = 'gaussian', "
                "rule.grouped = false and model.kind = 'phsic-mlp'"
            )

    # -- the kernel on a layer -------------------------------------------------------------
    def layer_kernel(self, z: Tensor) -> Tensor:
        """Kernel matrix of a set of layer outputs ``(..., m, d)``: on ``v`` (eq 14) if grouped, else on ``z``."""
        code = self.model.grouping.code(z) if self.grouped else z
        return layer_kernel_matrix(code, self.kernel, self.sigma)

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        if self.form == "batch":
            self.batch_grads(x, y)
            yield
            return
        ready = self.prev_y is not None
        self.online_grads(x, y, ready)
        if ready:
            yield

    # -- batch: eq 10 ------------------------------------------------------------------------
    def batch_grads(self, x: Tensor, y: Tensor) -> None:
        h = self.model.flatten(x)
        Ky = label_kernel_matrix(y, self.model.n_classes, h.dtype)
        for i in range(len(self.model.hidden)):
            with torch.enable_grad():
                z, out = local_forward(self.model, i, h.detach())
                phsic_objective(self.layer_kernel(z), Ky, self.gamma).sum().backward()
            h = out.detach()
        readout_step(self.model, h, y)

    # -- online: eqs 18–20 -------------------------------------------------------------------
    def pair_label_kernel(self, y: Tensor) -> Tensor:
        return label_kernel_matrix(torch.cat([y, self.prev_y]), self.model.n_classes)[0, 1]

    def online_grads(self, x: Tensor, y: Tensor, ready: bool) -> None:
        """One sample ``x`` ``(1, …)``: write the layers' updates (if a previous sample exists) and move the state on."""
        h = self.model.flatten(x)
        ky = self.pair_label_kernel(y).to(h.dtype) if ready else None
        for i, layer in enumerate(self.model.hidden):
            h = h.detach()
            with torch.enable_grad():
                z, out = local_forward(self.model, i, h)
                if ready and self.form == "pair":
                    z_prev = local_forward(self.model, i, self.prev_h[i])[0]
                    kz = self.layer_kernel(torch.cat([z, z_prev], -2))[..., 0, 1]
                    pair_objective(kz, ky, self.mean_kz[i], self.mean_ky, self.gamma).sum().backward()
            z = z.detach()
            if ready:
                if self.form == "running-mean":
                    kz = self.layer_kernel(torch.cat([z, self.prev_z[i]], -2))[..., 0, 1]
                    self.running_mean_grad(i, layer, h, z, kz, ky)
                self.mean_kz[i] = self.mean_kz[i] + self.rate * (kz.detach() - self.mean_kz[i])
            self.track(i, h, z)
            h = out
        if ready:
            self.mean_ky = self.mean_ky + self.rate * (ky - self.mean_ky)
            readout_step(self.model, h, y)
        self.prev_y = y.detach()

    def third_factor(self, i: int, kz: Tensor, ky: Tensor) -> Tensor:
        """``M = -(γ k̊_y - 2 k̊_z) k_z / σ²`` per replica (eq 12b), centred by the running means."""
        kz_c, ky_c = kz - self.mean_kz[i], ky - self.mean_ky
        return -(self.gamma * ky_c - 2.0 * kz_c) * kz / self.sigma**2

    @torch.no_grad()
    def running_mean_grad(self, i: int, layer, h: Tensor, z: Tensor, kz: Tensor, ky: Tensor) -> None:
        """Eq 20 written as a gradient: ``-M (f'(a_t) ∘ (z_t - μ_z)) (h_t - μ_h)ᵀ``."""
        a = layer.preactivation(h)
        slope = torch.where(a > 0, torch.ones_like(a), torch.full_like(a, self.model.negative_slope))
        M = self.third_factor(i, kz, ky).reshape(-1, 1, 1)
        layer.accumulate_grad(h - self.mean_h[i], -M * slope * (z - self.mean_z[i]))

    def track(self, i: int, h: Tensor, z: Tensor) -> None:
        """Keep sample ``t`` for the next step and update the running means of activity."""
        self.prev_h[i], self.prev_z[i] = h, z
        if self.mean_h[i] is None:
            self.mean_h[i], self.mean_z[i] = h.clone(), z.clone()
        else:
            self.mean_h[i] = self.mean_h[i] + self.rate * (h - self.mean_h[i])
            self.mean_z[i] = self.mean_z[i] + self.rate * (z - self.mean_z[i])
