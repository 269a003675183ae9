"""Fault injection through real ``ibhebb`` processes: kills, interrupts, full disk, damaged files, divergence, two processes.

Each fault must end in one line on stderr beginning ``ibhebb: error:`` (exit
status 2, or 130 for an interrupt), never a traceback, and the run must then
resume to weights bit-identical to an uninterrupted run's. The faults are
injected by ``tests/fault_hooks.py`` (the process sends itself the signal, or
its write fails with ``ENOSPC``, at a chosen point) or from outside (SIGKILL
of a running process); independent processes run side by side.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ibhebb import fileio
from ibhebb.config import load_config
from ibhebb.train import Trainer
from ibhebb.train.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HOOKS = str(ROOT / "tests" / "fault_hooks.py")
XOR = "configs/fig4-xor.toml"
BASE = ["seeds=2", "model.steps=3", "data.n_train=400", "rule.window=16", "optim.lr=3e-3", "threads=1"]
CHAINS = [("kill-mid-epoch", "int-in-eval"), ("int-mid-epoch", "kill-in-checkpoint"),
          ("int-in-checkpoint", "enospc-in-checkpoint")]
"""Faults met one after another by the processes of one run (three runs side by side)."""
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def start(fault: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HOOKS, fault, *map(str, args)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def ibhebb(fault: str, *args: str) -> tuple[int, str, str]:
    return finish(start(fault, *args))


def side_by_side(runs: list[tuple]) -> list[tuple[int, str, str]]:
    """Start every ``(fault, *args)`` at once, then wait for all."""
    procs = [start(*r) for r in runs]
    return [finish(p) for p in procs]


def error_line(rc: int, err: str, status: int = 2) -> str:
    """The one ``ibhebb: error:`` line of a failed run (warnings aside), after checking the exit status."""
    assert "Traceback" not in err, err
    assert rc == status, (rc, err)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("ibhebb: warning:")]
    assert len(lines) == 1 and lines[0].startswith("ibhebb: error: "), err
    return lines[0]


def reference(tmp_path: Path, epochs: int) -> tuple[dict, list]:
    """Weights and per-epoch test accuracies of an uninterrupted run (in this process)."""
    threads = torch.get_num_threads()
    try:
        t = Trainer(load_config(XOR, BASE + [f"epochs={epochs}"]), tmp_path / f"reference-{epochs}", progress=False)
        t.run()
    finally:
        torch.set_num_threads(threads)
    return t.model.state_dict(), accuracies(tmp_path / f"reference-{epochs}")


def accuracies(run: Path) -> list:
    return [json.loads(ln)["test_accuracy"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, ref: tuple[dict, list]) -> None:
    weights, acc = ref
    state = read_checkpoint(run / "checkpoint.pt")[1]["model"]
    assert state.keys() == weights.keys()
    for k in weights:
        assert torch.equal(state[k], weights[k]), k
    assert accuracies(run) == acc


def checkpointed_epochs(run: Path) -> int:
    return read_checkpoint(run / "checkpoint.pt")[0]["epoch"] + 1


def run_chain(run: Path, chain: tuple[str, ...]) -> None:
    """Each process resumes the last one's run, finishes an epoch, then meets the next fault; a last one finishes."""
    epochs = len(chain) + 1
    args = ["train", XOR, *BASE, f"epochs={epochs}", "--out", run, "--no-progress"]
    for k, fault in enumerate(chain):
        rc, _, err = ibhebb(fault, *(args if k == 0 else ["train", "--resume", "--out", run, "--no-progress"]))
        assert "Traceback" not in err, (fault, err)
        if fault.startswith("kill"):
            assert rc == -signal.SIGKILL, (fault, rc, err)
        elif fault.startswith("int"):
            line = error_line(rc, err, 130)
            assert line == f"ibhebb: error: interrupted; finished epochs are kept in {run}: " \
                           f"continue with `ibhebb train --resume --out {run}`", fault
        else:
            line = error_line(rc, err)
            assert "disk full while writing" in line and "KiB needed" in line and "is left as it was" in line, line
        assert checkpointed_epochs(run) == k + 1, fault  # the epoch finished before the fault is kept, no more
        if k > 0 and chain[k - 1].startswith("kill"):
            assert "taking over the stale lock" in err, err
    rc, out, err = ibhebb("none", "train", "--resume", "--out", run, "--no-progress")
    assert rc == 0 and "Traceback" not in err, err
    assert f"{epochs} epoch(s)" in out
    assert not fileio.temp_path(run / "checkpoint.pt").exists()


def test_chains_of_faults_then_resume_equal_an_uninterrupted_run(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(CHAINS)) as pool:
        jobs = [pool.submit(run_chain, tmp_path / f"chain-{i}", chain) for i, chain in enumerate(CHAINS)]
        ref = reference(tmp_path, 3)
        for job in jobs:
            job.result()
    for i in range(len(CHAINS)):
        assert_same_run(tmp_path / f"chain-{i}", ref)


def test_kill_9_from_outside_and_a_second_process_on_the_run(tmp_path):
    run = tmp_path / "run"
    first = start("slow", "train", XOR, *BASE, "epochs=3", "--out", run, "--no-progress")
    lock, metrics = run / fileio.LOCK, run / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists() and json.loads(lock.read_text())["pid"] == first.pid
    rc, _, err = ibhebb("none", "train", XOR, *BASE, "epochs=3", "--out", run, "--overwrite", "--no-progress")
    assert f"is in use by another ibhebb process (PID {first.pid} on " in error_line(rc, err)
    assert first.poll() is None, "the first process should still be running"
    first.send_signal(signal.SIGKILL)
    assert finish(first)[0] == -signal.SIGKILL
    done = checkpointed_epochs(run)
    assert 1 <= done < 3
    rc, _, err = ibhebb("none", "train", "--resume", "--out", run, "--no-progress")
    assert rc == 0 and "Traceback" not in err and "taking over the stale lock" in err, err
    assert_same_run(run, reference(tmp_path, 3))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished one-epoch run directory to damage (copied per case)."""
    out = tmp_path_factory.mktemp("faults") / "one"
    threads = torch.get_num_threads()
    try:
        Trainer(load_config(XOR, BASE + ["epochs=1"]), out, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return out


def _damage(run: Path, case: str) -> None:
    ck, cfg, met = run / "checkpoint.pt", run / "config.json", run / "metrics.jsonl"
    if case == "checkpoint-truncated":
        ck.write_bytes(ck.read_bytes()[:-300])
    elif case == "checkpoint-garbage":
        ck.write_bytes(os.urandom(2000))
    elif case == "config-garbage":
        cfg.write_bytes(b"\x00garbage{")
    elif case == "metrics-corrupt-line":
        met.write_text("not json\n" + met.read_text())
    elif case == "metrics-torn-line":
        with open(met, "a") as f:
            f.write('{"epoch": 2, "test_acc')
    elif case == "locked-elsewhere":
        (run / fileio.LOCK).write_text(json.dumps({"pid": 4242, "host": "another-host"}))


DAMAGE = {
    "checkpoint-truncated": "is truncated: ",
    "checkpoint-garbage": "is not an ibhebb checkpoint",
    "config-garbage": "cannot parse",
    "metrics-corrupt-line": "metrics.jsonl is corrupt at line 1",
    "locked-elsewhere": "is in use by process 4242 on host another-host",
    "metrics-torn-line": None,  # repaired, with a warning
}


def test_damaged_files_are_one_line_each(one_epoch, tmp_path):
    runs = []
    for case in DAMAGE:
        run = tmp_path / case
        shutil.copytree(one_epoch, run)
        _damage(run, case)
        runs.append(("none", "train", "--resume", "--out", run, "epochs=2", "--no-progress"))
    truncated = tmp_path / "reservoir.pt"  # a torch file cut short (garbage and other pickles: test_reliability)
    torch.save({"format": 1, "w": torch.zeros(100, 100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    runs.append(("none", "train", XOR, *BASE, "rule.memory=reservoir", f"rule.reservoir={truncated}", "--out",
                 tmp_path / "res", "--no-progress"))
    results = side_by_side(runs)
    for (case, want), (rc, _, err) in zip(DAMAGE.items(), results):
        if want is None:
            assert rc == 0 and "Traceback" not in err, (case, err)
            assert "ibhebb: warning: dropped the torn last line" in err, err
            assert [json.loads(ln)["epoch"] for ln in (tmp_path / case / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        else:
            assert want in error_line(rc, err), (case, err)
    for rc, _, err in results[len(DAMAGE):]:
        assert "cannot be read as a reservoir file" in error_line(rc, err), err


def test_divergence_in_each_path_is_one_line(tmp_path):
    diverge = ["optim.name=sgd", "optim.lr=1e6", "epochs=1", "--no-progress"]
    paths = {
        "rule-loop": ["configs/fig4-linear.toml", "engine=rule", "model.kind=mlp", "data.n_train=300", "seeds=2"],
        "engine": [XOR, *BASE, "engine=fast"],
        "minibatch": ["configs/fig4-linear.toml", "rule.name=backprop", "model.kind=mlp", "seeds=2"],
    }
    results = side_by_side([("none", "train", *args, *diverge, "--out", tmp_path / name) for name, args in paths.items()])
    for name, (rc, _, err) in zip(paths, results):
        line = error_line(rc, err)
        assert line.startswith("ibhebb: error: training diverged in epoch 1, samples 0–"), (name, line)
        assert "non-finite weights in seed(s) 0, 1 of 2, first in hidden layer 1" in line, (name, line)
        assert not (tmp_path / name / "checkpoint.pt").exists()


def test_a_real_full_disk_keeps_the_previous_checkpoint(tmp_path):
    """A 40 KiB tmpfs holds one checkpoint of this run but not the second beside it (the atomic write needs both)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        run = disk / "run"
        rc, _, err = ibhebb("none", "train", XOR, *BASE, "epochs=3", "--out", run, "--no-progress")
        line = error_line(rc, err)
        assert "disk full while writing" in line and "needed" in line and "free on its file system" in line, line
        assert checkpointed_epochs(run) == 1
        shutil.copytree(run, tmp_path / "moved")  # the user frees space (here: moves the run to a roomier disk)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    rc, _, err = ibhebb("none", "train", "--resume", "--out", tmp_path / "moved", "--no-progress")
    assert rc == 0 and "Traceback" not in err, err
    assert_same_run(tmp_path / "moved", reference(tmp_path, 3))
