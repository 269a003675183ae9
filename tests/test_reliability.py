"""Run directories that survive faults, in-process: atomic files, locks, verified checkpoints, divergence, seeded draws.

The same faults through real ``ibhebb`` processes (kill -9, Ctrl-C, a second
process) are in ``test_faults.py``.
"""
import datetime
import errno
import json
import os
import socket

import pytest
import torch

from ibhebb import fileio
from ibhebb.cli import main
from ibhebb.config import load_config
from ibhebb.errors import ConfigError, DivergenceError, UserError
from ibhebb.train import Trainer
from ibhebb.train import checkpoint as ckpt

XOR = "configs/fig4-xor.toml"
LINEAR = "configs/fig4-linear.toml"
TINY = ["seeds=2", "model.steps=3", "data.n_train=300", "rule.window=16", "optim.lr=3e-3"]
MLP = ["seeds=2", "model.kind=mlp", "data.n_train=300", "rule.window=16", "optim.lr=3e-3"]
"""The same for the rule's own (slow) loop: a static network on the linear data."""
TABLE1 = "configs/table1/mnist-phsic-gaussian-grp-div.toml"
TABLE1_TINY = ["data.name=linear", "data.n_train=256", "model.hidden=[16, 16]", "model.groups=4", "seeds=2",
               "optim.batch_size=32", "eval.train_samples=64"]


def trainer(tmp_path, config, overrides, name="run", **kw):
    return Trainer(load_config(config, overrides), tmp_path / name, progress=False, **kw)


def weights(t):
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def assert_equal_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("ibhebb: error: "), err
    assert "Traceback" not in err
    return lines[-1]


# -- the command line ------------------------------------------------------------------------
def test_overrides_after_flags_are_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", XOR, "seeds=1", "--no-progress", "epochs=2", "--out", str(out), "data.n_train=20", "model.steps=2"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["seeds"], cfg["epochs"], cfg["data"]["n_train"], cfg["model"]["steps"]) == (1, 2, 20, 2)


def test_sweep_takes_axes_after_flags(tmp_path, capsys):
    argv = ["sweep", LINEAR, "--no-progress", "--out", str(tmp_path / "s"), "rule.window=4,8", "epochs=1",
            "data.n_train=20", "seeds=1", "model.steps=2"]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == ["rule.window-4", "rule.window-8"]


def test_bench_settings_as_key_value(capsys):
    assert "--steps must be >= 0" in one_line_error(capsys, ["bench", "steps=-1"])
    assert "bench has no setting 'foo'" in one_line_error(capsys, ["bench", "foo=1"])


def test_reservoir_overrides_after_flags(tmp_path, capsys):
    line = one_line_error(capsys, ["reservoir", "pretrain", "configs/reservoir-pretrain-xor.toml", "--out",
                                   str(tmp_path / "r.pt"), "no_such_key=1"])
    assert "no_such_key" in line


def test_an_unknown_flag_is_one_line(capsys):
    assert main(["train", XOR, "--out", "x", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ibhebb: error: unrecognized arguments: --bogus (see ibhebb train --help)"]


def test_a_config_json_that_is_not_a_table_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("[1]\n")
    line = one_line_error(capsys, ["train", "--resume", "--out", str(tmp_path / "run")])
    assert "is not a config: it holds a JSON list" in line


def test_negative_threads_is_a_config_error():
    with pytest.raises(ConfigError, match="threads must be >= 0"):
        load_config(XOR, ["threads=-3"])


def test_out_is_a_file_or_cannot_be_created(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is an existing file" in one_line_error(capsys, ["train", XOR, "--out", str(f)])
    assert "cannot be created" in one_line_error(capsys, ["train", XOR, "--out", str(f / "sub")])


# -- atomic writes, metrics, locks -----------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    fileio.atomic_write_text(path, "old\n")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(UserError, match=r"disk full while writing .*f\.txt \(4 B needed, .* free"):
        fileio.atomic_write_text(path, "new\n")
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    assert path.read_text() == "old\n"
    assert not fileio.temp_path(path).exists()


def test_full_disk_during_the_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    base = ["train", XOR, *TINY, "--no-progress", "--out", str(out)]
    assert main(base + ["epochs=1"]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    real = fileio.atomic_write_bytes

    def full(path, data):
        if str(path).endswith("checkpoint.pt"):
            raise fileio.io_error(OSError(errno.ENOSPC, "No space left on device"), path, needed=len(data))
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", full)
    line = one_line_error(capsys, ["train", "--resume", "--out", str(out), "epochs=2", "--no-progress"])
    assert "disk full while writing" in line and "KiB needed" in line and "checkpoint.pt is left as it was" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    monkeypatch.setattr(ckpt, "atomic_write_bytes", real)
    assert main(["train", "--resume", "--out", str(out), "epochs=2", "--no-progress"]) == 0
    full_run = tmp_path / "full"
    assert main(["train", XOR, *TINY, "--no-progress", "--out", str(full_run), "epochs=2"]) == 0
    a = ckpt.read_checkpoint(out / "checkpoint.pt")[1]["model"]
    b = ckpt.read_checkpoint(full_run / "checkpoint.pt")[1]["model"]
    assert_equal_weights(a, b)


def test_read_jsonl_drops_a_torn_last_line_only(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert fileio.read_jsonl(p) == ([{"epoch": 1}, {"epoch": 2}], True)
    p.write_text('{"epoch": 1}\nxx\n{"epoch": 3}\n')
    with pytest.raises(UserError, match="corrupt at line 2"):
        fileio.read_jsonl(p)


def test_torn_metrics_line_is_repaired_on_resume_and_ignored_by_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", XOR, *TINY, "epochs=1", "--no-progress", "--out", str(out)]) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "test_accur')
    from ibhebb.app.plot import plot_run, read_metrics

    assert [r["epoch"] for r in read_metrics(out)] == [1]
    assert plot_run(out).exists()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "epochs=2", "--no-progress"]) == 0
    assert "dropped the torn last line" in capsys.readouterr().err
    assert [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_run_directory_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / fileio.LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(UserError, match=f"in use by another ibhebb process \\(PID {os.getppid()}"):
        trainer(tmp_path, XOR, TINY)
    (out / fileio.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(UserError, match="in use by process 1 on host elsewhere"):
        trainer(tmp_path, XOR, TINY)


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a PID that is surely dead now
    (out / fileio.LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    t = trainer(tmp_path, XOR, TINY + ["epochs=1"])
    assert f"taking over the stale lock {out / fileio.LOCK} (process {pid}, no longer running)" in capsys.readouterr().err
    assert json.loads((out / fileio.LOCK).read_text())["pid"] == os.getpid()
    t.run()
    assert not (out / fileio.LOCK).exists()


# -- checkpoints -----------------------------------------------------------------------------
@pytest.fixture
def finished_run(tmp_path):
    out = tmp_path / "run"
    trainer(tmp_path, XOR, TINY + ["epochs=1"]).run()
    return out


def resume_error(out, overrides=("epochs=2",)):
    cfg = load_config(out / "config.json", list(overrides))
    with pytest.raises(UserError) as e:
        Trainer(cfg, out, resume=True, progress=False)
    return str(e.value)


def test_checkpoint_header(finished_run):
    header, state = ckpt.read_checkpoint(finished_run / "checkpoint.pt")
    import ibhebb

    assert header["format"] == ckpt.FORMAT and header["ibhebb"] == ibhebb.__version__
    assert header["torch"] == torch.__version__ and header["epoch"] == 0
    assert header["config_hash"] == ckpt.config_hash(json.loads((finished_run / "config.json").read_text()))
    assert set(state) >= {"model", "rule", "optimizer", "scheduler", "rng", "diverged"}


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[: len(b) // 2], "is truncated: "),
        (lambda b: b[:10], "is truncated (10 bytes, no header)"),
        (lambda b: b"", "is empty"),
        (lambda b: os.urandom(4096), "is not an ibhebb checkpoint"),
        (lambda b: b[:-100] + bytes(100), "is corrupt: its checksum does not match"),
        (lambda b: b.replace(b'"format":1', b'"format":9', 1), "has format 9"),
        (lambda b: b.replace(b'"format":1', b'"format":[', 1), "has a corrupt header"),
    ],
    ids=["half", "ten-bytes", "empty", "garbage", "zeroed-tail", "future-format", "bad-header"],
)
def test_damaged_checkpoint_is_one_line(finished_run, damage, message):
    p = finished_run / "checkpoint.pt"
    p.write_bytes(damage(p.read_bytes()))
    assert message in resume_error(finished_run)


def test_checkpoint_of_an_older_ibhebb_without_header(finished_run):
    torch.save({"epoch": 0}, finished_run / "checkpoint.pt")  # what ibhebb wrote before the format had a header
    assert "written by an ibhebb older than checkpoint format 1" in resume_error(finished_run)


def test_checkpoint_of_another_version(finished_run, monkeypatch):
    monkeypatch.setattr(ckpt, "_version", lambda: "9.9.9")
    assert "was written by ibhebb 0.1.0, this is ibhebb 9.9.9" in resume_error(finished_run)


def test_checkpoint_of_another_config_names_the_keys(finished_run):
    message = resume_error(finished_run, ["epochs=2", "rule.window=8"])
    assert "belongs to a run of another config (differs in rule.window)" in message


def test_checkpoint_is_unpickled_with_weights_only(finished_run):
    data = ckpt.encode_checkpoint({"x": datetime.date(2024, 1, 1)}, load_config(finished_run / "config.json").to_dict(), 0)
    (finished_run / "checkpoint.pt").write_bytes(data)
    assert "cannot be loaded safely" in resume_error(finished_run, ["epochs=1"])


def test_reservoir_file_is_loaded_with_weights_only(tmp_path):
    from ibhebb.memory.reservoir import load_reservoir_file

    torch.save({"format": 1, "x": datetime.date(2024, 1, 1)}, tmp_path / "r.pt")
    with pytest.raises(ConfigError, match="cannot be read as a reservoir file"):
        load_reservoir_file(tmp_path / "r.pt")


# -- divergence ------------------------------------------------------------------------------
DIVERGE = ["optim.name=sgd", "optim.lr=1e6", "epochs=1"]


def _native_ok():
    from ibhebb.engine import cstep

    return cstep.unavailable(torch.float32) is None


@pytest.mark.parametrize(
    "config,extra,used",
    [
        (LINEAR, ["engine=rule", "model.kind=mlp"], "rule"),
        (XOR, ["engine=fast", "engine_chunk=32"], "engine"),
        (LINEAR, ["rule.name=backprop", "model.kind=mlp"], "rule"),
        (TABLE1, TABLE1_TINY + ["optim.lr=1e12", "optim.readout_lr=1e12", "epochs=1"], "rule"),
    ],
    ids=["rule-loop", "fast-engine", "minibatch-backprop", "minibatch-phsic"],
)
def test_divergence_stops_with_one_line(tmp_path, config, extra, used):
    t = trainer(tmp_path, config, TINY + DIVERGE + extra)
    with pytest.raises(DivergenceError) as e:
        t.run()
    msg = str(e.value)
    assert msg.startswith("training diverged in epoch 1, samples 0–")
    assert "non-finite weights in seed(s) 0, 1 of 2, first in " in msg and "layer" in msg
    assert "no epoch had finished, so there is no checkpoint" in msg
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    assert (t._engine_used()[0] == "rule") == (used == "rule")


@pytest.mark.skipif(not _native_ok(), reason="no C compiler: the C step cannot run here")
def test_divergence_in_the_c_step_is_caught_within_its_chunk(tmp_path):
    t = trainer(tmp_path, XOR, TINY + DIVERGE + ["engine=native", "engine_chunk=64"])
    with pytest.raises(DivergenceError, match=r"epoch 1, samples 0–(\d+) ") as e:
        t.run()
    assert t._engine_used()[0] == "native"
    last = int(str(e.value).split("samples 0–")[1].split(" ")[0])
    assert last < 300 - 1  # caught before the epoch's end


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_divergence_keeps_the_last_good_epoch(tmp_path, monkeypatch, engine):
    """NaN injected into the weights in epoch 2: the run stops there, epoch 1's checkpoint and metrics stay, and resume
    (without the fault) ends on the weights of an uninterrupted run."""
    overrides = MLP + ["epochs=2", f"engine={engine}"]
    full = trainer(tmp_path, LINEAR, overrides, "full")
    full.run()
    t = trainer(tmp_path, LINEAR, overrides)
    real = t.guard.advance

    def poisoned(k):
        if t.guard.epoch == 1 and t.guard.pos >= 100:
            with torch.no_grad():
                t.model.layers()[1].weight[1, 0, 0] = float("nan")
        real(k)

    monkeypatch.setattr(t.guard, "advance", poisoned)
    with pytest.raises(DivergenceError, match=r"epoch 2, .* seed\(s\) 1 of 2, first in the readout .*last good epoch \(1\)"):
        t.run()
    out = tmp_path / "run"
    assert ckpt.read_checkpoint(out / "checkpoint.pt")[0]["epoch"] == 0
    assert [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    resumed = Trainer(load_config(out / "config.json"), out, resume=True, progress=False)
    resumed.run()
    assert_equal_weights(weights(full), weights(resumed))


def test_drop_seeds_goes_on_with_the_others(tmp_path, capsys):
    overrides = TINY + ["epochs=2", "seeds=3"]
    clean = trainer(tmp_path, XOR, overrides, "clean")
    clean_summary = clean.run()
    t = trainer(tmp_path, XOR, overrides + ["on_divergence=drop-seeds"])
    with torch.no_grad():
        t.model.layers()[0].weight[1].fill_(float("inf"))
    s = t.run()
    assert "seed(s) 1 of 3, first in hidden layer 1" in capsys.readouterr().err
    assert s["seeds_surviving"] == 2 and s["diverged_seeds"] == [1]
    assert s["test_accuracy"][1] is None
    kept = [a for i, a in enumerate(clean_summary["test_accuracy"]) if i != 1]
    assert s["test_accuracy_mean"] == pytest.approx(sum(kept) / 2)
    for (name, a), b in zip(clean.model.state_dict().items(), t.model.state_dict().values()):
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]), name  # the other replicas never saw the NaN
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["diverged"] == [1] and rec["test_accuracy"][1] is None


def test_drop_seeds_stops_when_every_seed_diverged(tmp_path):
    t = trainer(tmp_path, XOR, TINY + DIVERGE + ["on_divergence=drop-seeds"])
    with pytest.raises(DivergenceError, match="every seed has diverged"):
        t.run()


# -- every random draw seeded and saved ------------------------------------------------------
def test_dropout_runs_are_bit_identical_and_resume_exactly(tmp_path):
    overrides = TABLE1_TINY + ["epochs=2"]
    cfg = load_config(TABLE1, overrides)
    assert cfg.model.dropout == 0.01
    a = trainer(tmp_path, TABLE1, overrides, "a")
    a.run()
    b = trainer(tmp_path, TABLE1, overrides, "b")
    b.run()
    assert_equal_weights(weights(a), weights(b))
    part = trainer(tmp_path, TABLE1, TABLE1_TINY + ["epochs=1"], "part")
    part.run()
    part = tmp_path / "part"
    resumed = Trainer(load_config(part / "config.json", ["epochs=2"]), part, resume=True, progress=False)
    resumed.run()
    assert_equal_weights(weights(a), weights(resumed))


def test_dropout_masks_differ_between_replicas_and_depend_on_the_seed():
    from ibhebb.models.phsic_mlp import PHSICMLP

    net = PHSICMLP(4, [64], 2, replicas=2, seed=0, dropout=0.5).train()
    z = torch.ones(2, 8, 64)
    out = net.drop(z)
    assert not torch.equal(out[0], out[1])
    assert set(out.unique().tolist()) == {0.0, 2.0}
    again = PHSICMLP(4, [64], 2, replicas=2, seed=0, dropout=0.5).train().drop(z)
    assert torch.equal(out, again)
    other = PHSICMLP(4, [64], 2, replicas=2, seed=1, dropout=0.5).train().drop(z)
    assert not torch.equal(out, other)


def test_the_global_generator_is_seeded_per_run_and_restored(tmp_path):
    """Draws from torch's global generator during training (e.g. reservoir noise) repeat across runs and resume."""
    draws = []

    class Drawing(Trainer):
        def _apply(self, x, y):
            draws.append(torch.rand(1).item())
            return super()._apply(x, y)

    for name in ("a", "b"):
        torch.manual_seed(len(draws))  # the caller's generator must not matter
        cfg = load_config(LINEAR, MLP + ["epochs=2", "engine=rule", "data.n_train=100"])
        Drawing(cfg, tmp_path / name, progress=False).run()
    n = len(draws) // 2
    assert draws[:n] == draws[n:]
    Drawing(load_config(LINEAR, MLP + ["epochs=1", "engine=rule", "data.n_train=100"]), tmp_path / "p", progress=False).run()
    Drawing(load_config(LINEAR, MLP + ["epochs=2", "engine=rule", "data.n_train=100"]), tmp_path / "p", resume=True,
            progress=False).run()
    assert draws[2 * n :] == draws[:n]


def test_resume_may_change_the_engine_and_the_divergence_policy(finished_run):
    cfg = load_config(finished_run / "config.json", ["epochs=2", "engine=rule", "on_divergence=drop-seeds", "threads=1"])
    Trainer(cfg, finished_run, resume=True, progress=False).run()
    assert ckpt.read_checkpoint(finished_run / "checkpoint.pt")[0]["epoch"] == 1


def test_a_trainer_never_run_does_not_lock_its_own_process_out(tmp_path, capsys):
    trainer(tmp_path, XOR, TINY + ["epochs=1"])
    trainer(tmp_path, XOR, TINY + ["epochs=1"], overwrite=True).run()
    assert "stale lock" not in capsys.readouterr().err


@pytest.mark.parametrize("rule, name", [("feedback-alignment", "feedback_0"), ("layer-classifier", "classifiers.0")])
def test_fixed_random_matrices_of_a_rule_depend_on_the_seed_not_on_the_replica_count(rule, name):
    from ibhebb import RuleConfig, make_rule
    from ibhebb.models.networks import MLP

    def matrix(seed, replicas):
        r = make_rule(rule, MLP(4, [6], 3, replicas=replicas, seed=seed), RuleConfig())
        return {**dict(r.named_parameters()), **dict(r.named_buffers())}[name].detach()

    two = matrix(0, 2)
    assert torch.equal(two[1], matrix(0, 3)[1])          # replica r of seed s, whatever R is
    assert not torch.equal(two[0], two[1])
    assert not torch.equal(matrix(1, 2)[0], two[0])       # another seed draws other matrices
