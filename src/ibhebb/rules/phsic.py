"""pHSIC rules of Pogodin & Latham (seed 001 §4; MATH §6), in three forms.

Every hidden layer ``ℓ`` descends its own objective
``pHSIC(Z^ℓ, Z^ℓ) - γ pHSIC(Y, Z^ℓ)`` (eq 9) with its input held fixed; the
readout learns by cross-entropy on the detached last hidden output. The
layer kernel (``rule.kernel``: Gaussian of width ``σ_z = rule.sigmas[2]`` or
cosine similarity) acts on ``z`` or, with ``rule.grouped``, on the group
code ``v`` of eq 14 (the model's grouping).

``rule.estimator = "biased"`` replaces pHSIC by the biased HSIC estimator
(batch form only); ``rule.kernel = "linear"`` is the linear kernel on ``z``.
On ``vgg`` the grouping is over channels (see :mod:`ibhebb.models.vgg`).

``rule.form`` picks how:

- ``batch`` — eq 10: the gradient of the objective on a minibatch (what the
  authors ran);
- ``pair`` — online, one sample at a time: the two-point estimate of eq 10 on
  the samples at ``t`` and ``t - Δt`` (:func:`~ibhebb.functional.phsic.pair_objective`),
  kernel means replaced by running means; for a Gaussian kernel and a linear
  layer it is eq 19 (eq 18 with grouping and divisive normalisation);
- ``running-mean`` — online, eq 20 (plain Gaussian kernel): the previous
  point in the Hebbian factor is replaced by the running mean of activity,
  ``ΔW = η M_{t,t-Δt} (f'(a_t) ∘ (z_t - μ_z)) (h_t - μ_h)ᵀ`` with
  ``M = -(γ k̊_y - 2 k̊_z) k(z_t, z_{t-Δt}) / σ²``; with ``rule.grouped``
  (Gaussian kernel on the group code) it is eq 21, see :meth:`PHSIC.grouped_step`;
- ``split`` — online, eq 22 (``rule.grouped`` and Gaussian only): the Hebbian
  term of sample ``t`` times ``M_{t,t-Δt} - M_{t+Δt,t}``, applied one step
  late, when ``t + Δt`` arrives.

The online state (previous sample, running means, the pending eq 22 factor)
is part of the rule's ``state_dict`` (``get_extra_state``), so a resumed run
continues exactly.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..config import require_choice
from ..errors import ConfigError
from ..functional.phsic import (
    ESTIMATORS, KERNELS, group_code_derivative, grouped_third_factor, label_kernel_matrix, layer_kernel_matrix,
    layer_objective, pair_objective, pair_third_factor, per_neuron,
)
from .base import Rule, register_rule
from .local import local_forward, readout_step, require_static_model


FORMS = ("batch", "pair", "running-mean", "split")
"""``rule.form``: the batch objective (eq 10) or one of the online two-point forms (eqs 18–22)."""


@register_rule("phsic")
class PHSIC(Rule):
    def __init__(self, model, config):
        super().__init__(model, config)
        self.form = config.form
        self.online = self.form != "batch"
        self.kernel, self.sigma, self.gamma = config.kernel, float(config.sigmas[2]), float(config.gamma)
        self.grouped, self.rate = config.grouped, float(config.mean_rate)
        self.estimator = config.estimator
        n = len(model.hidden)
        # online state: the previous sample's layer inputs / outputs and label, and running means
        self.prev_h: list[Tensor | None] = [None] * n
        self.prev_z: list[Tensor | None] = [None] * n
        self.prev_y: Tensor | None = None
        self.mean_kz: list[Tensor | float] = [0.0] * n
        self.mean_ky: Tensor | float = 0.0
        self.mean_h: list[Tensor | None] = [None] * n
        self.mean_z: list[Tensor | None] = [None] * n  # of z (eq 20) or of ∂w/∂z (grouped, eq 21)
        # eq 22: sample t's postsynaptic factor f'(a) ∘ ∂w/∂z and M_{t,t-Δt}, kept until t + Δt arrives
        self.prev_post: list[Tensor | None] = [None] * n
        self.prev_M: list[Tensor | None] = [None] * n

    ONLINE_STATE = ("prev_h", "prev_z", "prev_y", "mean_kz", "mean_ky", "mean_h", "mean_z", "prev_post", "prev_M")

    def get_extra_state(self) -> dict:
        """The online state, saved with the rule's ``state_dict`` so that ``--resume`` is exact."""
        state = {k: getattr(self, k) for k in self.ONLINE_STATE}
        return {k: list(v) if isinstance(v, list) else v for k, v in state.items()}

    def set_extra_state(self, state: dict) -> None:
        for k in self.ONLINE_STATE:
            v = state[k]
            setattr(self, k, list(v) if isinstance(v, list) else v)

    @classmethod
    def check_config(cls, cfg) -> None:
        require_static_model(cfg, "phsic")
        r = cfg.rule
        require_choice(r.kernel, KERNELS, "rule.kernel")
        require_choice(r.form, FORMS, "rule.form")
        require_choice(r.estimator, ESTIMATORS, "rule.estimator")
        if r.grouped and cfg.model.kind not in ("phsic-mlp", "vgg"):
            raise ConfigError("rule.grouped = true needs model.kind = 'phsic-mlp' or 'vgg' (the model holds the grouping)")
        if r.form != "batch" and (r.estimator != "phsic" or cfg.model.kind == "vgg"):
            raise ConfigError(f"rule.form = {r.form!r} is an online pHSIC rule: it needs rule.estimator = 'phsic' and "
                              "a fully connected model (use rule.form = 'batch' for the biased estimator or model.kind = 'vgg')")
        if r.form == "running-mean" and (r.kernel != "gaussian" or cfg.model.kind != "phsic-mlp"):
            raise ConfigError(
                "rule.form = 'running-mean' (eqs 20, 21) is a Gaussian-kernel rule: it needs rule.kernel = 'gaussian' "
                "and model.kind = 'phsic-mlp'"
            )
        if r.form == "split" and (r.kernel != "gaussian" or not r.grouped or cfg.model.kind != "phsic-mlp"):
            raise ConfigError(
                "rule.form = 'split' (eq 22) is the grouped Gaussian rule: it needs rule.kernel = 'gaussian', "
                "rule.grouped = true and model.kind = 'phsic-mlp'"
            )

    # -- the kernel on a layer -------------------------------------------------------------
    def layer_kernel(self, z: Tensor, index: int = 0) -> Tensor:
        """Kernel matrix of a set of hidden layer ``index``'s outputs ``(..., m, d)``: on ``v`` (eq 14) if grouped, else on ``z``."""
        code = self.model.group_code(index, z) if self.grouped else z
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
                layer_objective(self.layer_kernel(z, i), Ky, self.gamma, self.estimator).sum().backward()
            h = out.detach()
        readout_step(self.model, h, y)

    # -- online: eqs 18–20 -------------------------------------------------------------------
    def pair_label_kernel(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        return label_kernel_matrix(torch.cat([y, self.prev_y]), self.model.n_classes, dtype)[0, 1]

    def online_grads(self, x: Tensor, y: Tensor, ready: bool) -> None:
        """One sample ``x`` ``(1, …)``: write the layers' updates (if a previous sample exists) and move the state on."""
        h = self.model.flatten(x)
        ky = self.pair_label_kernel(y, h.dtype) if ready else None
        for i, layer in enumerate(self.model.hidden):
            h = h.detach()
            with torch.enable_grad():
                z, out = local_forward(self.model, i, h)
                if ready and self.form == "pair":
                    z_prev = local_forward(self.model, i, self.prev_h[i])[0]
                    kz = self.layer_kernel(torch.cat([z, z_prev], -2), i)[..., 0, 1]
                    pair_objective(kz, ky, self.mean_kz[i], self.mean_ky, self.gamma).sum().backward()
            z = z.detach()
            if self.grouped and self.form != "pair":
                kz = self.grouped_step(i, layer, h, z, ky, ready)
            elif ready and self.form == "running-mean":
                kz = self.layer_kernel(torch.cat([z, self.prev_z[i]], -2), i)[..., 0, 1]
                self.running_mean_grad(i, layer, h, z, kz, ky)
            if ready:
                self.mean_kz[i] = self.mean_kz[i] + self.rate * (kz.detach() - self.mean_kz[i])
            self.track(i, h, z)
            h = out
        if ready:
            self.mean_ky = self.mean_ky + self.rate * (ky - self.mean_ky)
            readout_step(self.model, h, y)
        self.prev_y = y.detach()

    def third_factor(self, i: int, kz: Tensor, ky: Tensor) -> Tensor:
        """``M = -(γ k̊_y - 2 k̊_z) k_z / σ²`` per replica (eq 12b), centred by the running means."""
        return pair_third_factor(kz, ky, self.mean_kz[i], self.mean_ky, self.gamma, self.sigma)

    @torch.no_grad()
    def slope(self, layer, h: Tensor) -> Tensor:
        """``f'(a)`` of the LeakyReLU at the layer's preactivation ``a = W h``."""
        a = layer.preactivation(h)
        return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, self.model.negative_slope))

    @torch.no_grad()
    def running_mean_grad(self, i: int, layer, h: Tensor, z: Tensor, kz: Tensor, ky: Tensor) -> None:
        """Eq 20 written as a gradient: ``-M (f'(a_t) ∘ (z_t - μ_z)) (h_t - μ_h)ᵀ``."""
        M = self.third_factor(i, kz, ky).reshape(-1, 1, 1)
        layer.accumulate_grad(h - self.mean_h[i], -M * self.slope(layer, h) * (z - self.mean_z[i]))

    @torch.no_grad()
    def grouped_step(self, i: int, layer, h: Tensor, z: Tensor, ky: Tensor | None, ready: bool) -> Tensor | None:
        """Grouped Gaussian kernel, online: eq 21 (``running-mean``) or eq 22 (``split``); returns ``k_z``.

        With ``e = f'(a) ∘ ∂w/∂z`` (:func:`~ibhebb.functional.phsic.group_code_derivative`,
        ``∝ r`` of eq 17) and ``M_α,t,t-Δt`` of eq 18
        (:func:`~ibhebb.functional.phsic.grouped_third_factor`), the gradient of the
        two-point objective ``ℓ_t = ℓ(t, t-Δt)`` (:func:`~ibhebb.functional.phsic.pair_objective`,
        running means of the kernels held fixed) is
        ``∂ℓ_t/∂W_αnm = -M_α,t,t-Δt (e_αn,t h_m,t - e_αn,t-Δt h_m,t-Δt)`` (eq 18).

        - eq 21 writes ``-M_α,t,t-Δt f'(a_t) ∘ (e_t h_tᵀ - μ_e μ_hᵀ)`` with running
          means ``μ_e`` (of ``∂w/∂z``) and ``μ_h`` (of the input) standing in for
          the previous point: it is exactly ``∂ℓ_t/∂W`` when the means equal
          that point (and ``f'`` is the same at both points, e.g. a linear
          layer), a biased estimate otherwise (``μ_e μ_hᵀ`` is not the mean of
          ``e hᵀ``).
        - eq 22 writes ``-(M_α,t,t-Δt - M_α,t+Δt,t) e_t h_tᵀ``, which is the
          gradient of ``ℓ_t + ℓ_{t+Δt}`` through sample ``t``'s activity alone
          (its neighbours held fixed). Summed over a stream with fixed weights
          it equals the sum of eq 18's updates, i.e. the gradient of
          ``Σ_t ℓ_t``, up to the two end terms. It needs ``M_{t+Δt,t}``, so the
          update for sample ``t`` is written when ``t + Δt`` arrives (one-step
          delay) from ``t``'s stored input ``h_t``, factor ``e_t`` and ``M_{t,t-Δt}``.
        """
        g = self.model.grouping
        size = z.shape[-1] // g.groups
        slope = self.slope(layer, h)
        post = slope * group_code_derivative(z, g.groups, g.delta, g.p)
        kz = None
        if ready:
            v, v_prev = g.code(z), g.code(self.prev_z[i])
            kz = layer_kernel_matrix(torch.cat([v, v_prev], -2), "gaussian", self.sigma)[..., 0, 1]
            M = grouped_third_factor(kz, ky, self.mean_kz[i], self.mean_ky, v[..., 0, :], v_prev[..., 0, :],
                                     self.gamma, self.sigma)  # (R, groups)
            if self.form == "running-mean":  # eq 21
                Mn = per_neuron(M, size).unsqueeze(-2)
                layer.accumulate_grad(h, -Mn * post)
                layer.accumulate_grad(self.mean_h[i], Mn * slope * self.mean_z[i])
            else:  # eq 22, for the previous sample
                if self.prev_M[i] is not None:
                    Mn = per_neuron(self.prev_M[i] - M, size).unsqueeze(-2)
                    layer.accumulate_grad(self.prev_h[i], -Mn * self.prev_post[i])
                self.prev_M[i] = M
        self.prev_post[i] = post
        return kz

    def track(self, i: int, h: Tensor, z: Tensor) -> None:
        """Keep sample ``t`` for the next step and update the running means of activity.

        The postsynaptic mean is of ``z`` (eq 20) or, for the grouped rules,
        of ``∂w/∂z ∝ r`` (eq 21).
        """
        self.prev_h[i], self.prev_z[i] = h, z
        if self.grouped:
            g = self.model.grouping
            z = group_code_derivative(z, g.groups, g.delta, g.p)
        if self.mean_h[i] is None:
            self.mean_h[i], self.mean_z[i] = h.clone(), z.clone()
        else:
            self.mean_h[i] = self.mean_h[i] + self.rate * (h - self.mean_h[i])
            self.mean_z[i] = self.mean_z[i] + self.rate * (z - self.mean_z[i])
