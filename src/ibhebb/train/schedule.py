"""Optimiser parameter groups (a readout with its own learning rate) and the learning-rate schedule.

``optim.readout_lr`` / ``optim.readout_weight_decay`` give the readout its own
settings (seed 001 trains its last layer with a different learning rate than
the local rules); ``optim.milestones`` and ``optim.gamma_lr`` multiply every
learning rate by ``gamma_lr`` after each listed epoch. The scheduler's state
travels in the checkpoint, so a resumed run follows the same schedule.
"""
from __future__ import annotations

import torch


def param_groups(cfg, model, params: list[torch.nn.Parameter]) -> list[dict]:
    """The trainable ``params`` split into the readout's group and the rest's."""
    o = cfg.optim
    readout_ids = {id(p) for p in model.readout.parameters()} if hasattr(model, "readout") else set()
    rest = [p for p in params if id(p) not in readout_ids]
    readout = [p for p in params if id(p) in readout_ids]
    groups = [{"params": rest}] if rest else []
    if readout:
        g = {"params": readout}
        if o.readout_lr > 0:
            g["lr"] = o.readout_lr
        if o.readout_weight_decay >= 0:
            g["weight_decay"] = o.readout_weight_decay
        groups.append(g)
    return groups


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step once per epoch: after epoch ``e`` in ``optim.milestones``, every lr is multiplied by ``gamma_lr``."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.optim.milestones), gamma=cfg.optim.gamma_lr)
