"""Torch's intra-op threads for a training loop that runs torch ops: all of them, or one while waiting dominates.

Torch splits a large op (a convolution's GEMM, an element-wise pass over a
feature map) over its threads and waits for the last of them. When another
process keeps one of those threads off its core, every op waits for the
scheduler to give it a time slice: on a 2-core machine with one competing
busy process the paper's CNN fell from 27 samples/s on one thread to 3 on
torch's default two. :class:`TorchThreads` watches the loop's time per sample
and how long its threads wait for a CPU; it tries one thread when they wait
(a machine busy from the start) or the time per sample has risen well above its
best, keeps it when it is faster, and goes back when the default is faster again.

On a machine that is not busy, it never tries another thread count, so a run
keeps torch's thread count from start to end and its results bit for bit.
Only a run on a busy machine changes threads, and then its last bits
may differ from another run's (torch's reductions and GEMMs split their work
by thread count). A config with an explicit ``threads`` does not adapt.

Examples
--------
>>> import torch
>>> from ibhebb.engine.threads import TorchThreads
>>> with TorchThreads(torch.get_num_threads()) as threads:
...     for _ in range(3):
...         y = torch.ones(4) * 2  # a sample's work
...         threads.advance(1)
"""
from __future__ import annotations

import os
import time
from collections import deque

import torch


def _median(values) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def run_queue_seconds() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a CPU (Linux's per-thread ``schedstat``),
    ``None`` where the system does not say."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total * 1e-9


class TorchThreads:
    """Chooses torch's thread count between ``threads`` and 1, per stretch of about :attr:`STRETCH` seconds.

    Call :meth:`advance` after each piece of work with the samples it trained; use it as a context manager so that
    torch's thread count is ``threads`` again at the end. With ``threads <= 1`` it does nothing. One thread is tried
    when the default's threads wait for a CPU (more than :attr:`WAITING` thread-seconds per second, from
    :func:`run_queue_seconds`) or its time per sample has risen :attr:`SLOWER` times above its best.
    """

    STRETCH = 0.05
    """Seconds of work per measurement (shorter pieces are pooled)."""
    WAITING = 0.25
    """Thread-seconds per second spent waiting for a CPU beyond which the default is suspect."""
    SLOWER = 1.5
    """The default is suspect once the median of its recent stretches is this much slower per sample than its best."""
    MARGIN = 0.9
    """A try must be this much faster per sample than the current choice's recent stretches to replace it."""
    SHORTEST, LONGEST, LATEST = 4, 64, 256
    """Stretches between tries: doubling while a try fails, up to :attr:`LONGEST`, times the failed try's slowdown (a
    try of the default 10 times slower than one thread waits 10 times longer), up to :attr:`LATEST`."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self.current = self.threads
        self.best = float("inf")
        self.recent = {self.threads: deque(maxlen=3), 1: deque(maxlen=3)}
        self.trying: int | None = None
        self.interval = self._wait = self._since = self.SHORTEST  # a first try may come at once
        self.switches = 0
        """How many times the thread count changed (for logs and tests)."""
        self._start, self._samples, self._waited = time.perf_counter(), 0, None

    def __enter__(self) -> TorchThreads:
        """Start measuring, on the thread count chosen so far (a loop that comes back keeps what it learnt)."""
        if self.threads > 1 and torch.get_num_threads() != self.next():
            torch.set_num_threads(self.next())
        self._restart()
        return self

    def __exit__(self, *exc) -> None:
        if self.threads > 1 and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _restart(self) -> None:
        self._start, self._samples = time.perf_counter(), 0
        self._waited = run_queue_seconds() if self.threads > 1 else None

    def advance(self, samples: int) -> None:
        """``samples`` more trained since the last call; at the end of a stretch, record it and choose the next."""
        if self.threads <= 1:
            return
        self._samples += samples
        now = time.perf_counter()
        if now - self._start < self.STRETCH or self._samples == 0:
            return
        waited = run_queue_seconds()
        waiting = None if waited is None or self._waited is None else (waited - self._waited) / (now - self._start)
        self.record(torch.get_num_threads(), (now - self._start) / self._samples, waiting)
        if self.next() != torch.get_num_threads():
            torch.set_num_threads(self.next())
        self._restart()

    def next(self) -> int:
        """Threads for the next stretch."""
        return self.trying or self.current

    def record(self, threads: int, seconds_per_sample: float, waiting: float | None = None) -> None:
        """A stretch ran on ``threads`` threads at ``seconds_per_sample``, its threads ``waiting`` thread-seconds per
        second for a CPU (``None``: unknown)."""
        recent = self.recent[threads]
        if self.trying is not None:
            self.trying, self._since = None, 0
            usual = _median(self.recent[self.current])
            if seconds_per_sample < self.MARGIN * usual:
                self.current, self.interval, self._wait = threads, self.SHORTEST, self.SHORTEST
                self.switches += 1
                recent.clear()
                if threads == self.threads:
                    self.best = seconds_per_sample
            else:  # a try k times slower waits up to k times longer for the next: tries cost a few % at most
                self.interval = min(2 * self.interval, self.LONGEST)
                self._wait = min(self.interval * max(1, round(seconds_per_sample / usual)), self.LATEST)
                if self.current == self.threads:
                    self.best = _median(self.recent[self.current])  # slower for another reason: the new normal
            recent.append(seconds_per_sample)
            return
        recent.append(seconds_per_sample)
        self._since += 1
        if threads != 1:
            self.best = min(self.best, seconds_per_sample)
        if self._since < self._wait:
            return
        if threads == 1:
            self.trying = self.threads
            return
        slower = len(recent) == recent.maxlen and _median(recent) > self.SLOWER * self.best
        if slower or (waiting is not None and waiting > self.WAITING):
            self.trying = 1


_ADAPTIVE = [True]


def set_adaptive(on: bool) -> None:
    """Whether the training loops may adapt torch's thread count (``False``: a run set to a fixed ``threads``)."""
    _ADAPTIVE[0] = bool(on)


def loop_threads(device: torch.device | str = "cpu", kept: TorchThreads | None = None) -> TorchThreads:
    """A :class:`TorchThreads` for a training loop on ``device``: torch's current thread count on the CPU, adapting
    unless :func:`set_adaptive` turned it off (then, and on a GPU, it does nothing). ``kept``: the one this loop
    used last time, returned when it still fits (enter it again: it starts from what it learnt)."""
    cpu = torch.device(device).type == "cpu"
    threads = torch.get_num_threads() if cpu and _ADAPTIVE[0] else 1
    if kept is not None and kept.threads == threads:
        return kept
    return TorchThreads(threads)
