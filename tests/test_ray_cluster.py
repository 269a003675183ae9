"""A sweep on a running Ray cluster, as users run it: ``ray start --head``, then ``ibhebb sweep ... --ray HOST:PORT``.

The test starts a real head node (in its own process group, stopped at the
end), runs a two-cell sweep on it, kills one cell's worker mid-run (its PID
is in the cell's lock file), checks the one-line error, and reruns the sweep:
the finished cell is skipped and the interrupted one resumes to the weights
of an uninterrupted run. ``make setup`` installs Ray (the ``ray`` extra) so that
``make test`` runs it; it is skipped where Ray is not installed (``pip install
'ibhebb[ray]'``).
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

try:
    import ray
except ImportError:
    ray = None
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
pytestmark = [pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'ibhebb[ray]')"),
              pytest.mark.skipif(RAY is None, reason="the `ray` command is not on the PATH")]
ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
seeds = 1
epochs = 3
threads = 1
engine = "rule"
[data]
name = "linear"
n_train = 1500
n_test = 50
[model]
kind = "mlp"
hidden = [4]
[rule]
name = "biohsic"
window = 8
gamma = 10.0
sigmas = [0.5, 0.25, 1.0]
[optim]
lr = 3e-3
[eval]
hsic_samples = 0
train_samples = 100
"""


# Ray >= 2.59 turns token authentication on for local clusters and keeps a token in ~/.ray/auth_token, which another
# Ray session on this machine may have written: the head node and the sweep get one token of their own, as a cluster
# with authentication is set up (RAY_AUTH_MODE and RAY_AUTH_TOKEN on every node and client).
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(port: int, temp: str) -> subprocess.Popen | None:
    """``ray start --head --block`` on ``port``; the node, or None if it exited before it listened (Ray gives its
    raylet a fixed 30 s to register, which a loaded 2-core machine can miss)."""
    node = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--block", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=RAY_ENV,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if node.poll() is not None:
                _kill_group(node)
                return None
            assert time.monotonic() < deadline, "the head node did not come up in 180 s"
            time.sleep(0.5)
            continue
        break
    while node.poll() is None and time.monotonic() < deadline:  # listening; ready once `ray status` sees its node
        status = subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], capture_output=True, text=True, env=RAY_ENV)
        if status.returncode == 0 and "node_" in status.stdout:
            return node
        time.sleep(1)
    _kill_group(node)
    return None


def _kill_group(node: subprocess.Popen) -> None:
    """What a head node that gave up left running (its GCS server, its raylet)."""
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(node: subprocess.Popen) -> None:
    os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


@pytest.fixture
def head_node():
    """A running head node on a free port (up to three tries); yields ``HOST:PORT``; stops its process group after."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    node = None
    try:
        for _ in range(3):
            port = free_port()
            node = start_head(port, temp)
            if node is not None:
                break
        assert node is not None, "ray start --head exited three times"
        yield f"127.0.0.1:{port}"
    finally:
        if node is not None:
            stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def sweep(config, out, address, *extra):
    cmd = [sys.executable, "-m", "ibhebb", "sweep", str(config), "rule.window=4,8", "--out", str(out), "--ray", address, *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=RAY_ENV)


# 1-6 min: the head node takes 20-40 s to start on two shared cores, a worker as long again
def test_sweep_on_a_running_cluster_survives_a_killed_worker(tmp_path, head_node):
    from ibhebb.config import load_config
    from ibhebb.fileio import LOCK
    from ibhebb.train import Trainer
    from ibhebb.train.checkpoint import read_checkpoint

    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ibhebb", "sweep", str(config), "rule.window=4,8", "--out", str(out), "--ray", head_node,
           "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=RAY_ENV)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and first.poll() is None:
        for cell in sorted(out.glob("rule.window-*")):
            metrics, lock = cell / "metrics.jsonl", cell / LOCK
            if metrics.exists() and metrics.read_text().count("\n") >= 1 and lock.exists():
                try:
                    victim = (cell, json.loads(lock.read_text())["pid"])
                except (ValueError, KeyError, OSError):
                    continue
                break
        time.sleep(0.05)
    assert victim is not None, first.communicate()
    cell, pid = victim
    os.kill(pid, signal.SIGKILL)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"ibhebb: error: the worker of cell {cell.name} died"), err
    assert "run the sweep again" in line
    other = next(c for c in out.glob("rule.window-*") if c != cell)
    assert json.loads((other / "summary.json").read_text())["epochs"] == 3
    done_at = (other / "summary.json").stat().st_mtime_ns

    rerun = sweep(config, out, head_node)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 cell(s), 1 already done, 1 to run" in rerun.stdout
    assert (other / "summary.json").stat().st_mtime_ns == done_at  # skipped, not retrained
    threads = torch.get_num_threads()
    try:
        ref = Trainer(load_config(cell / "config.json"), tmp_path / "reference", progress=False)
        ref.run()
    finally:
        torch.set_num_threads(threads)
    resumed = read_checkpoint(cell / "checkpoint.pt")[1]["model"]
    for k, v in ref.model.state_dict().items():
        assert torch.equal(resumed[k], v), k


def test_an_address_where_nothing_listens_is_one_line(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    r = sweep(config, tmp_path / "sweep", f"127.0.0.1:{free_port()}", "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "cannot connect to the Ray cluster at '127.0.0.1:" in r.stderr and "nothing answers" in r.stderr
    assert not (tmp_path / "sweep").exists()  # refused before any file was written
