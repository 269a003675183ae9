"""``ibhebb compare``: runs labelled by the config keys in which they differ, sorted and grouped."""
import json
from pathlib import Path

import pytest

from ibhebb.app import compare as comparing
from ibhebb.app import plot as plotting
from ibhebb.cli import main
from ibhebb.config import load_config
from ibhebb.train import Trainer

BASE = ["seeds=2", "epochs=1", "model.steps=2", "data.n_train=80", "data.n_test=40"]
CELLS = [(8, 1e-3), (8, 3e-3), (16, 1e-3), (16, 3e-3)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    dirs = []
    for window, lr in CELLS:
        out = root / f"w{window}-lr{lr}"
        Trainer(load_config("fig4-xor", BASE + [f"rule.window={window}", f"optim.lr={lr}"]), out, progress=False).run()
        dirs.append(str(out))
    return dirs


def table_rows(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]], head


def test_table_has_a_column_per_differing_key_and_distinct_labels(runs, capsys, tmp_path):
    assert main(["compare", *runs, "--out", str(tmp_path / "c.png")]) == 0
    rows, head = table_rows(capsys.readouterr().out)
    assert head[:3] == ["run", "window", "lr"]
    assert [(r["window"], r["lr"]) for r in rows] == [("8", "0.001"), ("8", "0.003"), ("16", "0.001"), ("16", "0.003")]
    result = comparing.compare(runs)
    assert result["keys"] == ["rule.window", "optim.lr"]
    labels = [r["label"] for _, rows_ in result["groups"] for r in rows_]
    assert labels == ["window=8, lr=0.001", "window=8, lr=0.003", "window=16, lr=0.001", "window=16, lr=0.003"]
    for r, d in zip(rows, runs):
        mean = json.loads((Path(d) / "summary.json").read_text())["test_accuracy_mean"] * 100
        assert r["test accuracy (%)"].startswith(f"{mean:.2f} ±")


def test_the_plot_legend_uses_the_same_labels(runs, tmp_path, monkeypatch):
    figures = []
    real = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, out: figures.append(
        [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]) or real(fig, out))
    comparing.plot_comparison(comparing.compare(runs), tmp_path / "a.png")
    assert figures[-1] == [[f"window={w}, lr={lr:g} (2 seeds)" for w, lr in CELLS]]
    assert main(["plot", *runs, "--out", str(tmp_path / "b.png")]) == 0  # `ibhebb plot A B` draws the same
    assert figures[-1] == figures[-2]
    comparing.plot_comparison(comparing.compare(runs, group="window"), tmp_path / "g.png")
    assert figures[-1] == [[f"lr={lr:g} (2 seeds)" for lr in (1e-3, 3e-3)]] * 2


def test_sort_by_a_config_key_or_a_result_and_reverse(runs, capsys, tmp_path):
    png = str(tmp_path / "c.png")
    assert main(["compare", *runs, "--sort", "lr", "--out", png]) == 0
    rows, _ = table_rows(capsys.readouterr().out)
    assert [r["lr"] for r in rows] == ["0.001", "0.001", "0.003", "0.003"]
    assert main(["compare", *runs, "--sort", "rule.window", "--reverse", "--out", png]) == 0
    rows, _ = table_rows(capsys.readouterr().out)
    assert [r["window"] for r in rows] == ["16", "16", "8", "8"]
    assert main(["compare", *runs, "--sort", "accuracy", "--reverse", "--out", png]) == 0
    rows, _ = table_rows(capsys.readouterr().out)
    means = [float(r["test accuracy (%)"].split(" ±")[0]) for r in rows]
    assert means == sorted(means, reverse=True)


def test_group_gives_one_table_per_value_without_the_group_column(runs, capsys, tmp_path):
    assert main(["compare", *runs, "--group", "window", "--sort", "lr", "--out", str(tmp_path / "c.png")]) == 0
    text = capsys.readouterr().out
    blocks = text.split("**rule.window = ")[1:]
    assert [b.split("**")[0] for b in blocks] == ["8", "16"]
    for b in blocks:
        rows, head = table_rows(b)
        assert "window" not in head and [r["lr"] for r in rows] == ["0.001", "0.003"]


def test_runs_that_do_not_differ_keep_the_rule_label(runs):
    result = comparing.compare([runs[0], runs[0]])
    assert result["keys"] == [] and result["groups"][0][1][0]["label"] == "biohsic (paper, N=8), xor"


def test_keys_that_do_not_change_results_never_label_a_run():
    a = comparing.flatten({"log": [], "data": {"root": "/a", "name": "xor"}, "seeds": 1})
    b = comparing.flatten({"log": ["tensorboard"], "data": {"root": "/b", "name": "xor"}, "seeds": 3})
    assert comparing.differing_keys([a, b]) == ["seeds"]


@pytest.mark.parametrize("argv,message", [
    (["--sort", "windw"], "did you mean 'rule.window'?"),
    (["--group", "batch_size"], "ambiguous: say which of optim.batch_size, eval.batch_size"),
    (["--group", "accuracy"], "--group takes a config key"),
])
def test_unknown_or_ambiguous_keys_are_one_line(runs, capsys, tmp_path, argv, message):
    assert main(["compare", *runs, *argv, "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_sweep_directory_stands_for_its_finished_cells(runs, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    names = [f"cell-{i}" for i in range(len(runs))] + ["cell-unstarted"]
    for name, run in zip(names, runs):
        (sweep / name).symlink_to(run)
    (sweep / "sweep.json").write_text(json.dumps({"cells": [{"name": n, "values": {}} for n in names]}))
    result = comparing.compare([str(sweep)])
    assert [r["name"] for _, rows in result["groups"] for r in rows] == names[:-1]
    assert result["keys"] == ["rule.window", "optim.lr"]
