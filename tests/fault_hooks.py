"""Run the ``ibhebb`` CLI with one fault injected at a chosen point: ``python tests/fault_hooks.py FAULT ARGS...``.

Used by ``test_faults.py``; the process is a real ``ibhebb`` run, and the
faults are real too (a SIGKILL or SIGINT the process sends itself, an
``ENOSPC`` from the write), only their timing is chosen. ``FAULT`` is one of:

- ``none``: no fault;
- ``kill-mid-epoch`` / ``int-mid-epoch``: SIGKILL / SIGINT after 100 samples of the process's second epoch;
- ``int-in-eval``: SIGINT while the process's second epoch is evaluated;
- ``kill-in-checkpoint`` / ``int-in-checkpoint``: half of the process's second checkpoint written to its
  temporary file, then SIGKILL / SIGINT;
- ``enospc-in-checkpoint``: the process's second checkpoint write fails with ``ENOSPC``;

so that a chain of processes, each resuming the last, finishes one epoch and then meets its fault.
- ``slow``: every sample sleeps 20 ms in the first epoch and 250 ms after it (a run that lasts, for two processes
  on one directory: the second may take long to start on a loaded machine).
"""
import errno
import os
import signal
import sys
import time


def install(fault: str) -> None:
    from ibhebb import fileio
    from ibhebb.train import checkpoint, trainer

    if fault in ("kill-mid-epoch", "int-mid-epoch", "slow"):
        real_advance = trainer.DivergenceGuard.advance
        sig = signal.SIGKILL if fault == "kill-mid-epoch" else signal.SIGINT
        epochs = []

        def advance(self, k):
            real_advance(self, k)
            if not epochs or epochs[-1] != self.epoch:
                epochs.append(self.epoch)
            if fault == "slow":
                time.sleep((0.02 if len(epochs) == 1 else 0.25) * k)
            elif len(epochs) == 2 and self.pos >= 100:
                os.kill(os.getpid(), sig)
                time.sleep(5)  # the signal arrives here

        trainer.DivergenceGuard.advance = advance
    elif fault == "int-in-eval":
        real_evaluate = trainer.evaluate
        calls = []

        def evaluate(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            return real_evaluate(*args, **kwargs)

        trainer.evaluate = evaluate
    elif fault in ("kill-in-checkpoint", "int-in-checkpoint", "enospc-in-checkpoint"):
        real_write = checkpoint.atomic_write_bytes
        calls = []

        def write(path, data):
            calls.append(1)
            if len(calls) < 2:
                return real_write(path, data)
            if fault == "enospc-in-checkpoint":
                raise fileio.io_error(OSError(errno.ENOSPC, "No space left on device"), path, needed=len(data))
            with open(fileio.temp_path(path), "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL if fault == "kill-in-checkpoint" else signal.SIGINT)
            time.sleep(5)

        checkpoint.atomic_write_bytes = write
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    # as at an interactive terminal: a shell that starts the tests in the background (`make test &`) has its children
    # ignore SIGINT, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(sys.argv[1])
    from ibhebb.cli import main

    sys.exit(main(sys.argv[2:]))
