"""Trained networks out of run directories: plain ``nn.Module`` per seed, test accuracy, safetensors export.

A run directory (see :mod:`ibhebb.train`) holds the weights of all ``R``
replicas (seeds) trained at once, stacked on a leading dimension. Here each
replica becomes an ordinary torch module built from ``torch.nn`` layers —
``nn.Linear``, ``nn.Conv2d``, ``nn.AvgPool2d``, activations, ``nn.LayerNorm``
without parameters — that computes the same function as ibhebb's model for
that replica, so it can be used, fine-tuned or saved anywhere torch is.

Examples
--------
>>> import ibhebb                                           # doctest: +SKIP
>>> net = ibhebb.load_run("runs/x", seed=0)                 # doctest: +SKIP
>>> net(torch.randn(5, 1, 28, 28)).argmax(-1)               # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..train import checkpoint

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"

#: Model kinds that :func:`load_run` turns into plain modules.
EXPORTABLE = ("mlp", "lif-mlp", "cnn")

#: One sample's shape, ``(C, H, W)`` or ``(d,)``, for each data set (a CNN's LayerNorm and flattening need it).
INPUT_SHAPES = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "kmnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "linear": (2,),
    "xor": (2,),
}


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The state of the run's ``checkpoint.pt`` on the CPU, checked and loaded with ``weights_only=True``
    (:func:`ibhebb.train.checkpoint.read_checkpoint`: no code runs from the file).

    Raises
    ------
    UserError
        If the directory holds no checkpoint, or the file is damaged or not a checkpoint.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"{run_dir} holds no {CHECKPOINT}: not a run directory, or no epoch has finished")
    return checkpoint.read_checkpoint(path, map_location="cpu")[1]


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config a run directory holds (``config.json``), as a dict."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"cannot parse {path}: {e}") from None


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation(name: str) -> list[nn.Module]:
    return [_ACTIVATIONS[name]()] if name in _ACTIVATIONS else []


LAYERNORM_EPS = 1e-5
"""ε of the models' parameter-free LayerNorm in runs whose config does not say (``model.layernorm_eps``)."""


def _layernorm_eps(model: dict) -> float:
    return float(model.get("layernorm_eps", LAYERNORM_EPS))


def _linear(weights: dict[str, Tensor], prefix: str, seed: int) -> nn.Linear:
    w = weights[f"{prefix}.weight"][seed]
    b = weights.get(f"{prefix}.bias")
    layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b[seed])
    return layer


def _hidden_prefixes(weights: dict[str, Tensor]) -> list[str]:
    n = len({k.split(".")[1] for k in weights if k.startswith("hidden.") and k.endswith(".weight")})
    return [f"hidden.{i}" for i in range(n)]


def _mlp_blocks(weights: dict[str, Tensor], model: dict, seed: int) -> tuple[list[nn.Linear], list[nn.Sequential]]:
    """Each layer's ``nn.Linear`` and what follows it (activation, LayerNorm), readout last."""
    linears = [_linear(weights, p, seed) for p in [*_hidden_prefixes(weights), "readout"]]
    after = []
    for lin in linears[:-1]:
        mods = _activation(model["activation"])
        if model["layernorm"]:
            mods.append(nn.LayerNorm(lin.out_features, eps=_layernorm_eps(model), elementwise_affine=False, dtype=lin.weight.dtype))
        after.append(nn.Sequential(*mods))
    return linears, [*after, nn.Sequential()]


class LeakyIntegrateMLP(nn.Module):
    """A rate leaky-integrate MLP (:class:`ibhebb.models.LeakyMLP` for one seed) from plain torch layers.

    A sample is presented for ``steps`` Euler steps from rest: each layer's
    potential follows ``u ← u + leak · (W h + b − u)`` (``leak = Δt/τ_m``) and
    passes on its rate ``LN(act(u))``; the logits are the readout's potential
    after the last step.

    Parameters
    ----------
    linears : list of nn.Linear
        The hidden layers, then the readout.
    after : list of nn.Module
        What turns each layer's potential into its rate (activation, LayerNorm); identity for the readout.
    leak : float
    steps : int
    """

    def __init__(self, linears: list[nn.Linear], after: list[nn.Module], *, leak: float, steps: int):
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.rates = nn.ModuleList(after)
        self.leak, self.steps = float(leak), int(steps)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        us: list[Tensor | None] = [None] * len(self.linears)
        for _ in range(self.steps):
            h = x
            for i, (lin, rate) in enumerate(zip(self.linears, self.rates)):
                drive = lin(h)
                u = us[i]
                us[i] = u = self.leak * drive if u is None else u + self.leak * (drive - u)
                h = rate(u)
        return h

    def extra_repr(self) -> str:
        return f"leak={self.leak}, steps={self.steps}"


def _cnn(weights: dict[str, Tensor], model: dict, in_shape: tuple[int, ...], seed: int) -> nn.Sequential:
    if len(in_shape) != 3:
        raise UserError(f"a CNN needs images (C, H, W); the run's data set gives samples of shape {in_shape}")
    after_pool = model.get("z_after_pool", True)
    pool, eps = 2, _layernorm_eps(model)
    c, h, w = in_shape
    mods: list[nn.Module] = []
    pending = 1  # pooling owed to the next layer when a layer's output is its map before pooling
    for prefix in _hidden_prefixes(weights):
        wt = weights[f"{prefix}.weight"][seed]
        b = weights.get(f"{prefix}.bias")
        if pending > 1:
            mods.append(nn.AvgPool2d(pending))
            h, w = h // pending, w // pending
        k = wt.shape[-1]
        conv = nn.Conv2d(wt.shape[1], wt.shape[0], k, padding=k // 2, bias=b is not None, dtype=wt.dtype)
        with torch.no_grad():
            conv.weight.copy_(wt)
            if b is not None:
                conv.bias.copy_(b[seed])
        c = wt.shape[0]
        mods += [conv, *_activation(model["activation"])]
        if model["layernorm"]:
            mods.append(nn.LayerNorm((c, h, w), eps=eps, elementwise_affine=False, dtype=wt.dtype))
        if after_pool:
            mods.append(nn.AvgPool2d(pool))
            h, w = h // pool, w // pool
        pending = 1 if after_pool else pool
    if pending > 1:
        mods.append(nn.AvgPool2d(pending))
    mods += [nn.Flatten(), _linear(weights, "readout", seed)]
    return nn.Sequential(*mods)


def plain_module(cfg: dict, weights: dict[str, Tensor], seed: int = 0) -> nn.Module:
    """Replica ``seed`` of a run's model as a module of plain torch layers, in eval mode.

    Parameters
    ----------
    cfg : dict
        The run's resolved config (``config.json``).
    weights : dict of str to Tensor
        The model's state dict from the checkpoint, every tensor with a leading replica dimension.
    seed : int
        Which replica, ``0 <= seed < cfg["seeds"]``.
    """
    model = cfg["model"]
    kind = model["kind"]
    if kind not in EXPORTABLE:
        raise UserError(f"model.kind = {kind!r} cannot be loaded as a plain module (supported: {', '.join(EXPORTABLE)})")
    replicas = weights["readout.weight"].shape[0]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < replicas:
        raise UserError(f"seed must be one of 0..{replicas - 1} (the run trained {replicas} seed(s)), got {seed!r}")
    if kind == "cnn":
        net = _cnn(weights, model, INPUT_SHAPES.get(cfg["data"]["name"], ()), seed)
    else:
        linears, after = _mlp_blocks(weights, model, seed)
        if kind == "mlp":
            mods: list[nn.Module] = [nn.Flatten()]
            for lin, rest in zip(linears, after):
                mods += [lin, *rest]
            net = nn.Sequential(*mods)
        else:
            net = LeakyIntegrateMLP(linears, after, leak=model["dt"] / model["tau_m"], steps=model["steps"])
    return net.eval()


def load_run(run_dir: str | Path, seed: int = 0) -> nn.Module:
    """A trained network back from a run directory, as an eval-mode ``nn.Module`` of plain torch layers.

    No data set is needed: the architecture comes from the run's
    ``config.json``, the weights from its ``checkpoint.pt`` (the last finished
    epoch, read with ``weights_only=True``).

    Parameters
    ----------
    run_dir : path-like
        A directory written by ``ibhebb train`` (or :class:`ibhebb.train.Trainer`).
    seed : int
        Which of the run's ``seeds`` networks, ``0 <= seed < seeds``: the
        ``seed``-th entry of ``test_accuracy`` in ``summary.json``.

    Returns
    -------
    torch.nn.Module
        For ``model.kind = "mlp"`` an ``nn.Sequential`` of ``nn.Flatten``,
        ``nn.Linear``, activations and ``nn.LayerNorm(elementwise_affine=False)``;
        for ``"cnn"`` one of ``nn.Conv2d``, ``nn.AvgPool2d``, activations,
        LayerNorm, ``nn.Flatten`` and a ``nn.Linear`` readout (inputs are images
        ``(B, C, H, W)``); for ``"lif-mlp"`` a :class:`LeakyIntegrateMLP`.
        Its output is the logits ``(B, n_classes)``.

    Raises
    ------
    UserError
        If the directory is not a finished run, the seed does not exist, or the
        model kind has no plain equivalent (``phsic-mlp``).

    Examples
    --------
    >>> import ibhebb
    >>> net = ibhebb.load_run("runs/x", seed=0)                 # doctest: +SKIP
    >>> logits = net(images)                                    # doctest: +SKIP
    """
    cfg = read_run_config(run_dir)
    return plain_module(cfg, read_checkpoint(run_dir)["model"], seed)


def _test_set(cfg: dict, data: str | None):
    from ..data import load_dataset

    d = cfg["data"]
    if data is None or data == d["name"]:
        ds = load_dataset(d["name"], root=d["root"] or None, seed=cfg["seed"], n_train=d["n_train"] or None,
                          n_test=d["n_test"] or None)
    else:
        ds = load_dataset(data, root=d["root"] or None, seed=cfg["seed"])
    return ds


@torch.no_grad()
def evaluate_run(run_dir: str | Path, data: str | None = None, batch_size: int = 1000) -> dict[str, Any]:
    """Test accuracy of every seed of a run, computed by the plain modules of :func:`load_run`.

    Parameters
    ----------
    run_dir : path-like
    data : str, optional
        A data set name to test on instead of the run's own (its whole test
        set; the run's own uses the run's ``data.n_test``).
    batch_size : int

    Returns
    -------
    dict
        ``data`` (name), ``samples``, ``test_accuracy`` (one per seed, as in ``summary.json``).
    """
    cfg = read_run_config(run_dir)
    weights = read_checkpoint(run_dir)["model"]
    nets = [plain_module(cfg, weights, i) for i in range(weights["readout.weight"].shape[0])]
    ds = _test_set(cfg, data)
    expected = INPUT_SHAPES.get(cfg["data"]["name"])
    if expected is not None and math.prod(ds.x_test.shape[1:]) != math.prod(expected):
        raise UserError(f"{ds.name} samples have shape {tuple(ds.x_test.shape[1:])}; the run's network takes {expected}")
    x, y = ds.x_test.to(next(nets[0].parameters()).dtype), ds.y_test
    if cfg["model"]["kind"] == "cnn" and x.dim() == 2:
        x = x.reshape(len(x), *expected)
    accs = []
    for net in nets:
        correct = sum(int((net(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
        accs.append(correct / max(len(x), 1))
    return {"data": ds.name, "samples": len(x), "test_accuracy": accs}


# -- safetensors --------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32"}


def write_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors in the safetensors format (readable by ``safetensors.torch.load_file``), without the package.

    The file is an 8-byte little-endian header length, a JSON header naming
    each tensor's dtype, shape and byte range, then the tensors' bytes
    (little-endian, row-major), in key order.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise UserError(f"cannot export tensor {name!r} of dtype {t.dtype}")
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    return path


def export_run(run_dir: str | Path, out: str | Path, seed: int | None = None) -> tuple[Path, list[str]]:
    """Write a run's trained weights to a ``.safetensors`` file.

    With ``seed``, the tensors are that seed's plain module's ``state_dict``
    (``net.load_state_dict(load_file(out))`` works for ``net = load_run(run_dir, seed)``).
    Without, every key holds all seeds stacked on a leading dimension of size ``seeds``.
    The file's metadata holds the run's config (``config``), the model kind,
    the number of seeds and the ibhebb version.

    Returns
    -------
    (path, keys)
    """
    from .._version import __version__

    cfg = read_run_config(run_dir)
    weights = read_checkpoint(run_dir)["model"]
    replicas = weights["readout.weight"].shape[0]
    if seed is not None:
        tensors = plain_module(cfg, weights, seed).state_dict()
    else:
        per_seed = [plain_module(cfg, weights, i).state_dict() for i in range(replicas)]
        tensors = {k: torch.stack([sd[k] for sd in per_seed]) for k in per_seed[0]}
    meta = {
        "format": "ibhebb",
        "ibhebb_version": __version__,
        "model_kind": cfg["model"]["kind"],
        "seeds": str(replicas),
        "layout": f"seed {seed}" if seed is not None else "stacked: leading dimension = seed",
        "config": json.dumps(cfg, sort_keys=True),
    }
    return write_safetensors(dict(tensors), out, meta), sorted(tensors)
