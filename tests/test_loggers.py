"""TensorBoard and W&B outputs: what they receive equals metrics.jsonl."""
import json
import sys
import types

import pytest

from ibhebb.cli import main
from ibhebb.config import load_config
from ibhebb.train import Trainer

RUN = ["seeds=2", "epochs=2", "model.steps=3", "data.n_train=100", "data.n_test=50", "rule.window=8"]


def expected_scalars(line: dict) -> dict[str, dict[str, float]]:
    """What each TensorBoard run should hold for one metrics line, spelled out by hand."""
    seeds = len(line["test_accuracy"])
    runs = {f"seed_{i}": {} for i in range(seeds)} | {"mean": {}}
    per_seed = {"test_accuracy": line["test_accuracy"], "train_accuracy": line["train_accuracy"]}
    for l, layer in enumerate(line["layers"]):
        for k in ("loss", "hsic_xz", "hsic_yz"):
            per_seed[f"layers/{l}/{k}"] = layer[k]
    for tag, values in per_seed.items():
        for i, v in enumerate(values):
            runs[f"seed_{i}"][tag] = v
        runs["mean"][tag] = sum(values) / seeds
    for tag in ("updates", "train_seconds", "samples_per_second", "wall_seconds"):
        runs["mean"][tag] = line[tag]
    return runs


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def check_events_equal_metrics(out):
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    want = [expected_scalars(ln) for ln in lines]
    runs = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert runs == sorted(want[0])
    for run in runs:
        events = read_events(out / "tensorboard" / run)
        assert set(events) == set(want[0][run]), run
        for tag, points in events.items():
            assert [s for s, _ in points] == [ln["epoch"] for ln in lines], (run, tag)
            for (_, got), w in zip(points, want):
                assert got == pytest.approx(w[run][tag], rel=1e-6, abs=1e-7), (run, tag)


def test_tensorboard_events_equal_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'ibhebb[tensorboard]')")
    out = tmp_path / "run"
    Trainer(load_config("fig4-xor", RUN + ['log=["tensorboard"]']), out, progress=False).run()
    check_events_equal_metrics(out)


def test_tensorboard_from_the_cli_flag_and_across_resume_and_overwrite(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'ibhebb[tensorboard]')")
    out = tmp_path / "run"
    flags = ["--out", str(out), "--no-progress", "--tensorboard"]
    assert main(["train", "fig4-xor", *RUN, "epochs=1", *flags]) == 0
    assert json.loads((out / "config.json").read_text())["log"] == ["tensorboard"]
    assert main(["train", "--resume", "epochs=2", "--out", str(out), "--no-progress"]) == 0
    check_events_equal_metrics(out)  # each epoch once
    assert main(["train", "fig4-xor", *RUN, "epochs=1", *flags, "--overwrite"]) == 0
    check_events_equal_metrics(out)  # the old run's events are gone


def test_no_logging_by_default(tmp_path):
    out = tmp_path / "run"
    Trainer(load_config("fig4-xor", RUN + ["epochs=1"]), out, progress=False).run()
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()


def test_a_missing_package_or_unknown_output_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    assert main(["train", "fig4-xor", *RUN, "--out", str(tmp_path / "a"), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ibhebb[tensorboard]'" in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()
    assert main(["train", "fig4-xor", *RUN, 'log=["tb"]', "--out", str(tmp_path / "b")]) == 2
    assert "'tb' is not one of: tensorboard, wandb" in capsys.readouterr().err


def test_wandb_offline_receives_the_same_numbers(tmp_path, monkeypatch):
    """With a stand-in for the wandb package (it need not be installed): offline mode, config, every number."""
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls["init"].append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "run"
    Trainer(load_config("fig4-xor", RUN + ['log=["wandb"]']), out, progress=False).run()
    (init,) = calls["init"]
    assert init["mode"] == "offline" and init["dir"] == str(out) and init["config"]["log"] == ["wandb"]
    assert calls["finish"] == 1
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in calls["log"]] == [1, 2]
    for (_, data), line in zip(calls["log"], lines):
        want = {}
        for run, tags in expected_scalars(line).items():
            for tag, v in tags.items():
                want[tag if tag in ("updates", "train_seconds", "samples_per_second", "wall_seconds") else f"{tag}/{run}"] = v
        assert data.keys() == want.keys()
        assert all(data[k] == pytest.approx(v) for k, v in want.items())
