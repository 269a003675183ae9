"""Reservoir working memory (MATH §4): rate reservoirs whose trained readout computes ξ.

- :mod:`.dynamics` — eq 8, :class:`Reservoir` (a bank of ``G`` reservoirs, ``B`` streams each);
- :mod:`.readout` — eq 9, online learners :class:`LMS` and :class:`RLS` (FORCE) with ``partial_fit``;
- :mod:`.stream` — drive a bank with a stream of held samples, ξ targets of windows, scores;
- :mod:`.file` — the file a pre-training run writes.

The Fig 3 experiment and task-free pre-training live in :mod:`ibhebb.app` (``fig3``, ``pretrain``).
"""
from .dynamics import Reservoir, ReservoirState, reservoir_step
from .readout import LMS, RLS, Readout, lms_update_, make_readout, rls_update_

__all__ = ["LMS", "RLS", "Readout", "Reservoir", "ReservoirState", "lms_update_", "make_readout", "reservoir_step", "rls_update_"]
