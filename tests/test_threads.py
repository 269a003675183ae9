"""TorchThreads: torch's thread count for the torch training loops, from synthetic stretch times (no timing here)."""
import torch

from ibhebb.engine import threads as T
from ibhebb.engine.threads import TorchThreads, loop_threads, set_adaptive


def drive(choice: TorchThreads, seconds, stretches: int) -> list[int]:
    """Run ``stretches`` stretches, each taking ``seconds(threads)`` per sample; the thread counts used."""
    used = []
    for _ in range(stretches):
        n = choice.next()
        used.append(n)
        choice.record(n, seconds(n))
    return used


def test_a_steady_machine_never_tries_another_thread_count():
    """The property that keeps an idle run's results bit for bit: no try of one thread while the speed holds."""
    choice = TorchThreads(2)
    wobble = iter([1.0, 1.2, 0.9, 1.3, 1.0, 1.1] * 100)
    assert set(drive(choice, lambda n: next(wobble), 300)) == {2}
    assert choice.switches == 0


def test_a_collapse_moves_to_one_thread_and_back_when_it_ends():
    choice = TorchThreads(2)
    busy = [False]

    def cost(n):  # two threads 10x slower while busy
        return (10.0 if busy[0] else 0.7) if n == 2 else 1.0

    assert set(drive(choice, cost, 20)) == {2}
    busy[0] = True
    used = drive(choice, cost, 200)
    assert used[:3] == [2, 2, 1]  # two slow stretches (the median of the last three), then one thread is tried
    assert used[4:].count(1) >= 185  # and kept: the default is tried ever more rarely
    assert used[4:].count(2) <= 3  # the default, 10x slower, is tried ten times more rarely
    busy[0] = False
    used = drive(choice, cost, 400)
    assert used[-100:] == [2] * 100  # the default came back at its next try and stays
    assert choice.switches == 2


def test_a_slowdown_that_one_thread_does_not_cure_is_the_new_normal():
    """Both counts slower (the work got heavier, or the whole machine slower): one try, then no more."""
    choice = TorchThreads(2)
    drive(choice, lambda n: 1.0, 10)
    used = drive(choice, lambda n: 3.0 if n == 2 else 3.5, 100)
    assert used.count(1) == 1 and choice.current == 2


def test_advance_measures_stretches_and_restores_the_thread_count(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(T.time, "perf_counter", lambda: clock[0])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with TorchThreads(2) as choice:
            for i in range(40):  # 0.1 s per sample on two threads after the 5th stretch, 0.02 s on one
                clock[0] += (0.1 if i >= 5 else 0.01) if torch.get_num_threads() == 2 else 0.02
                choice.advance(1)
            assert torch.get_num_threads() == 1 and choice.current == 1
        assert torch.get_num_threads() == 2  # the default again after the loop
    finally:
        torch.set_num_threads(before)


def test_loop_threads_adapts_only_when_asked_and_on_the_cpu():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert loop_threads("cpu").threads == 2
        assert loop_threads("cuda").threads == 1  # nothing to adapt on a GPU
        set_adaptive(False)  # a run with an explicit threads setting
        assert loop_threads("cpu").threads == 1
    finally:
        set_adaptive(True)
        torch.set_num_threads(before)


def test_a_loop_that_comes_back_starts_from_what_it_learnt():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = loop_threads("cpu")
        drive(first, lambda n: 1.0, 5)
        drive(first, lambda n: 10.0 if n == 2 else 1.0, 5)  # moved to one thread
        assert first.current == 1
        again = loop_threads("cpu", first)
        assert again is first
        with again:
            assert torch.get_num_threads() == 1  # the next epoch starts on one thread
        assert torch.get_num_threads() == 2
        torch.set_num_threads(3)  # the thread count changed: a fresh one
        assert loop_threads("cpu", first) is not first
    finally:
        torch.set_num_threads(before)


def test_threads_that_wait_for_a_cpu_from_the_start_try_one_thread_at_once():
    """A machine busy before the run starts: no slowdown to see, but the run queue says the threads wait."""
    choice = TorchThreads(2)
    used = []
    for _ in range(50):
        n = choice.next()
        used.append(n)
        choice.record(n, 10.0 if n == 2 else 1.0, waiting=0.6 if n == 2 else 0.0)
    assert used[:2] == [2, 1] and used.count(1) >= 45


def test_waiting_that_one_thread_does_not_cure_is_tried_ever_more_rarely():
    """Low-priority neighbours: the threads wait a little, but one thread is no faster; tries back off to one in 64."""
    choice = TorchThreads(2)
    used = []
    for _ in range(400):
        n = choice.next()
        used.append(n)
        choice.record(n, 1.0 if n == 2 else 1.3, waiting=0.3)
    assert choice.current == 2 and 5 <= used.count(1) <= 10
    tries = [i for i, n in enumerate(used) if n == 1]
    assert tries[-1] - tries[-2] == 65


def test_run_queue_seconds_reads_every_thread_of_the_process():
    import sys

    first = T.run_queue_seconds()
    if sys.platform.startswith("linux"):
        assert first is not None and first >= 0
        assert T.run_queue_seconds() >= first  # a running total
