"""Trained networks back from run directories: load_run, ibhebb eval, ibhebb export."""
import json

import pytest
import torch

import ibhebb
from ibhebb.app.runs import read_checkpoint, write_safetensors
from ibhebb.cli import main
from ibhebb.config import load_config
from ibhebb.data import Dataset
from ibhebb.train import Trainer

MLP_RUN = ["model.kind=mlp", "seeds=3", "epochs=1", "data.n_train=120", "data.n_test=60", "optim.lr=3e-3", "rule.window=8"]
LIF_RUN = ["seeds=2", "epochs=1", "model.steps=4", "data.n_train=100", "data.n_test=50", "optim.lr=3e-3", "rule.window=8"]


def train(tmp_path, config, overrides, name="run", data=None):
    out = tmp_path / name
    trainer = Trainer(load_config(config, overrides), out, progress=False, data=data)
    trainer.run()
    return out, trainer


def fake_images(n_train=32, n_test=16, shape=(1, 28, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset("mnist", torch.randn(n_train, *shape, generator=g, dtype=torch.float64),
                   torch.randint(0, 10, (n_train,), generator=g), torch.randn(n_test, *shape, generator=g, dtype=torch.float64),
                   torch.randint(0, 10, (n_test,), generator=g), 10)


@pytest.mark.parametrize("config,overrides", [
    ("fig4-linear", MLP_RUN + ["dtype=float64"]),
    ("fig4-linear", MLP_RUN + ["dtype=float64", "model.layernorm=false", "model.activation=tanh", "model.bias=false"]),
    ("fig4-xor", LIF_RUN + ["dtype=float64"]),
])
def test_load_run_gives_a_plain_module_computing_the_trained_replica(tmp_path, config, overrides):
    out, trainer = train(tmp_path, config, overrides)
    x = trainer.data.x_test
    with torch.no_grad():
        expected = trainer.model(x)
    for i in range(trainer.cfg.seeds):
        net = ibhebb.load_run(out, seed=i)
        assert not net.training
        assert {type(m).__module__.split(".")[0] for m in net.modules() if not list(m.children())} <= {"torch"}
        with torch.no_grad():
            got = net(x)
        torch.testing.assert_close(got, expected[i], rtol=0, atol=1e-10)


@pytest.mark.parametrize("extra", [["model.layernorm=true"],
                                   ["model.layernorm=false", "model.z_after_pool=false", "model.bias=false"]])
def test_load_run_of_a_cnn(tmp_path, extra, one_thread):
    cfg = ["model.kind=cnn", "model.channels=[2,3]", "rule.name=backprop", "optim.batch_size=8", "seeds=2", "epochs=1",
           "dtype=float64", "data.name=mnist", *extra]
    out, trainer = train(tmp_path, "fig5-cifar10-backprop", cfg + ["data.augment=false"], data=fake_images())
    x = trainer.data.x_test
    with torch.no_grad():
        expected = trainer.model(x)
    for i in range(2):
        net = ibhebb.load_run(out, seed=i)
        assert isinstance(net, torch.nn.Sequential) and any(isinstance(m, torch.nn.Conv2d) for m in net)
        with torch.no_grad():
            torch.testing.assert_close(net(x), expected[i], rtol=0, atol=1e-10)


def test_checkpoint_loads_with_weights_only(tmp_path):
    out, trainer = train(tmp_path, "fig4-linear", MLP_RUN)
    from ibhebb.train.checkpoint import read_checkpoint as read_checked  # the header, then torch.load(weights_only=True)

    header, state = read_checked(out / "checkpoint.pt")
    assert header["format"] == 1 and state["epoch"] == 0 and set(state["model"]) == set(trainer.model.state_dict())
    assert read_checkpoint(out)["model"].keys() == state["model"].keys()


@pytest.mark.parametrize("config,overrides", [("fig4-linear", MLP_RUN), ("fig4-xor", LIF_RUN)])
def test_cli_eval_prints_the_accuracies_of_summary_json(tmp_path, capsys, config, overrides):
    out, _ = train(tmp_path, config, overrides)
    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] == summary["test_accuracy"]
    assert main(["eval", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[: summary["seeds"]] == [f"seed {i}: test accuracy {a:.4f}" for i, a in enumerate(summary["test_accuracy"])]
    assert lines[-1].startswith(f"mean: {summary['test_accuracy_mean']:.4f}")


def test_cli_eval_on_another_data_set(tmp_path, capsys):
    out, _ = train(tmp_path, "fig4-linear", MLP_RUN)
    assert main(["eval", str(out), "--data", "xor", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == "xor" and result["samples"] == 100 and len(result["test_accuracy"]) == 3


def test_cli_export_is_read_by_safetensors(tmp_path, capsys):
    load_file = pytest.importorskip("safetensors.torch").load_file
    from safetensors import safe_open

    out, trainer = train(tmp_path, "fig4-linear", MLP_RUN)
    f = tmp_path / "w.safetensors"
    assert main(["export", str(out), "--out", str(f)]) == 0
    assert "4 tensors (all seeds, stacked)" in capsys.readouterr().out
    tensors = load_file(str(f))
    for i in range(3):
        net = ibhebb.load_run(out, seed=i)
        assert set(tensors) == set(net.state_dict())
        for k, v in net.state_dict().items():
            assert torch.equal(tensors[k][i], v)
    with safe_open(str(f), "pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["config"]) == json.loads((out / "config.json").read_text()) and meta["seeds"] == "3"

    one = tmp_path / "seed1.safetensors"
    assert main(["export", str(out), "--out", str(one), "--seed", "1"]) == 0
    net = ibhebb.load_run(out, seed=0)
    net.load_state_dict(load_file(str(one)))  # strict: the same keys and shapes
    with torch.no_grad():
        torch.testing.assert_close(net(trainer.data.x_test), ibhebb.load_run(out, seed=1)(trainer.data.x_test))


def test_safetensors_writer_round_trips_dtypes_and_shapes(tmp_path):
    load_file = pytest.importorskip("safetensors.torch").load_file
    tensors = {"a": torch.randn(3, 5, dtype=torch.float64), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(2, 1, 3, 3)[:, :, 1:], "d": torch.tensor(2.5), "e": torch.zeros(0, 4)}
    got = load_file(str(write_safetensors(tensors, tmp_path / "t.safetensors", {"k": "v"})))
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)


@pytest.mark.parametrize("argv,message", [
    (["eval", "{tmp}/nowhere"], "not a run directory"),
    (["export", "{tmp}/nowhere", "--out", "{tmp}/w.safetensors"], "not a run directory"),
    (["eval", "{run}", "--data", "mnist-typo"], "unknown data set"),
    (["export", "{run}", "--out", "{tmp}/w.safetensors", "--seed", "5"], "seed must be one of 0..2"),
])
def test_cli_eval_and_export_mistakes_are_one_line(tmp_path, capsys, argv, message):
    out, _ = train(tmp_path, "fig4-linear", MLP_RUN)
    argv = [a.format(tmp=tmp_path, run=out) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("ibhebb: error:")


def test_a_model_kind_without_a_plain_module_is_refused(tmp_path, capsys):
    out, _ = train(tmp_path, "table1/mnist-phsic-gaussian-plain",
                   ["data.name=xor", "model.hidden=[16]", "epochs=1", "seeds=1", "data.n_train=40", "optim.batch_size=20"])
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.kind = 'phsic-mlp' cannot be loaded as a plain module" in err and err.count("\n") == 1


def test_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    out, _ = train(tmp_path, "fig4-linear", MLP_RUN)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not an ibhebb checkpoint" in err and err.count("\n") == 1


def test_cli_eval_of_a_cnn_on_cifar10_from_a_torchvision_folder(tmp_path, capsys, monkeypatch, one_thread):
    import hashlib
    import pickle

    import numpy as np

    from ibhebb.data import cifar10

    where = tmp_path / "vision" / "cifar-10-batches-py"
    where.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, 8)], b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8)}
        (where / name).write_bytes(pickle.dumps(batch, protocol=2))
    monkeypatch.setattr(cifar10, "MD5", {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in where.iterdir()})
    cfg = ["epochs=1", "model.channels=[2,3]", "data.augment=false", f"data.root='{tmp_path / 'vision'}'", "seeds=2"]
    out, _ = train(tmp_path, "fig5-cifar10-backprop", cfg)
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] == json.loads((out / "summary.json").read_text())["test_accuracy"]
    assert main(["eval", str(out), "--data", "xor"]) == 2
    err = capsys.readouterr().err
    assert "xor samples have shape (2,); the run's network takes (3, 32, 32)" in err and err.count("\n") == 1
