"""Convolutional layers under the three-factor rule, the CNN, and image augmentation."""
import hashlib
import pickle

import numpy as np
import pytest
import torch
from torch.func import functional_call

from ibhebb.config import RuleConfig, load_config
from ibhebb.data import Dataset
from ibhebb.data.augment import augment_draws, augment_images, crop_flip
from ibhebb.errors import ConfigError
from ibhebb.functional.kernels import hsic_bottleneck
from ibhebb.models import build_model
from ibhebb.models.cnn import CNN
from ibhebb.rules import make_rule

SIGMAS = [0.8, 0.4, 0.9]
GAMMA = 3.0


def small_cnn(z_after_pool, layernorm, replicas=2, seed=0):
    return CNN((2, 6, 6), [3, 4], 3, replicas=replicas, seed=seed, z_after_pool=z_after_pool, layernorm=layernorm).double()


@pytest.mark.parametrize("z_after_pool", [True, False])
@pytest.mark.parametrize("layernorm", [True, False])
def test_conv_update_is_autograd_of_layer_loss(z_after_pool, layernorm):
    """Every conv layer's update (exact ξ, buffer) equals ∂L^ℓ/∂θ^ℓ with the past outputs and the layer's input fixed."""
    window = 4
    model = small_cnn(z_after_pool, layernorm)
    rule = make_rule("biohsic", model, RuleConfig(variant="exact", memory="buffer", window=window, gamma=GAMMA, sigmas=SIGMAS))
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(window, 2, 6, 6, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (window,), generator=g)
    for i in range(window - 1):
        assert list(rule.updates(xs[i : i + 1], ys[i : i + 1])) == []
    x0 = xs[-1:].reshape(1, -1)
    xw = torch.cat([rule.memory.x, x0], 0)
    yw = torch.cat([rule.memory.y, torch.nn.functional.one_hot(ys[-1:], 3).double()], 0)
    wants, h = [], x0
    for li, layer in enumerate(model.hidden):
        params = {k: p.detach().clone().requires_grad_() for k, p in layer.named_parameters()}
        z0 = functional_call(layer, params, (h,))  # autograd through F.conv2d, pooling, LayerNorm
        z = torch.cat([rule.memory.z[li], z0], -2)
        loss = hsic_bottleneck(xw, yw, z, gamma=GAMMA, sigmas=tuple(SIGMAS))[0].sum()
        wants.append(torch.autograd.grad(loss, list(params.values())))
        h = z0.detach()
    next(rule.updates(xs[-1:], ys[-1:]))
    for layer, want in zip(model.hidden, wants):
        for p, w in zip(layer.parameters(), want):
            torch.testing.assert_close(p.grad, w, rtol=1e-9, atol=1e-13)
        assert want[0].abs().max() > 0


def test_pooled_readout_update_is_autograd_of_window_cross_entropy():
    """With z before pooling the readout pools its input; its delta rule is still the window's cross-entropy gradient."""
    model = small_cnn(z_after_pool=False, layernorm=True)
    rule = make_rule("biohsic", model, RuleConfig(variant="paper", window=3, gamma=GAMMA, sigmas=SIGMAS))
    xs = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    ys = torch.tensor([0, 2, 1])
    for i in range(2):
        list(rule.updates(xs[i : i + 1], ys[i : i + 1]))
    with torch.no_grad():
        h = torch.cat([rule.memory.z[-1], model.represent(xs[-1:])[-1]], -2)
    params = {k: p.detach().clone().requires_grad_() for k, p in model.readout.named_parameters()}
    logits = functional_call(model.readout, params, (h,))
    loss = sum(torch.nn.functional.cross_entropy(lr, ys) for lr in logits)
    gw, gb = torch.autograd.grad(loss, list(params.values()))
    next(rule.updates(xs[-1:], ys[-1:]))
    torch.testing.assert_close(model.readout.weight.grad, gw, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(model.readout.bias.grad, gb, rtol=1e-9, atol=1e-13)


def test_replicas_are_independent_convolutions():
    """Replica r of a seed is the same network whatever R is, and the grouped convolution equals R separate ones."""
    big = small_cnn(True, False, replicas=3, seed=5)
    one = small_cnn(True, False, replicas=2, seed=5)
    torch.testing.assert_close(big.hidden[1].weight[1], one.hidden[1].weight[1])
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    h = big.hidden[0](x.reshape(4, -1))  # (R, B, d): per-replica input of layer 2
    layer = big.hidden[1]
    got = layer.preactivation(h)
    for r in range(3):
        maps = h[r].reshape(4, *layer.in_shape)
        want = torch.nn.functional.conv2d(maps, layer.weight[r], layer.bias[r], padding=1)
        torch.testing.assert_close(got[r], want)


@pytest.mark.parametrize("shape,size", [((3, 6, 6), 2), ((3, 7, 5), 2), ((2, 9, 9), 3), ((2, 8, 7), 3), ((4, 5, 5), 1)])
def test_pool_is_avg_pool2d_and_pool_vjp_its_autograd(shape, size):
    """pool equals torch's avg_pool2d (the floor at the borders included), pool_vjp autograd of avg_pool2d."""
    from ibhebb.functional.conv import pool, pool_vjp

    gen = torch.Generator().manual_seed(sum(shape) + size)
    x = torch.randn(2, 3, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
    want = torch.nn.functional.avg_pool2d(x.reshape(6, *shape), size).reshape(2, 3, shape[0], *(n // size for n in shape[1:]))
    torch.testing.assert_close(pool(x.detach(), size), want.detach(), rtol=1e-14, atol=1e-14)
    cot = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    (gx,) = torch.autograd.grad((want * cot).sum(), x)
    torch.testing.assert_close(pool_vjp(cot, size, *shape[1:]), gx, rtol=0, atol=1e-15)
    assert gx.abs().max() > 1e-2


@pytest.mark.parametrize("shape,size", [((3, 6, 6), 2), ((3, 7, 5), 2), ((2, 9, 9), 3), ((4, 5, 5), 1)])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("layernorm", [True, False])
def test_conv_vjp_is_autograd_through_activation_layernorm_and_pooling(shape, size, activation, layernorm):
    """conv_vjp (the LayerNorm's means taken on the pooled map) equals autograd of ⟨ξ, P_out(LN(act(a)))⟩, maps whose
    border the pooling's floor drops included; conv_output's z equals the unfused chain."""
    from ibhebb.functional.conv import MapGeometry, conv_output, conv_vjp, pool
    from ibhebb.functional.layers import activate
    from ibhebb.functional.layers import layernorm as ln

    C, H, W = shape
    g = MapGeometry((1, H, W), shape, (C, H // size, W // size), 1, size, 1)
    gen = torch.Generator().manual_seed(sum(shape) + size)
    a = torch.randn(3, 2, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
    xi = torch.randn(3, 2, C * (H // size) * (W // size), generator=gen, dtype=torch.float64)
    r, z = conv_output(a, g, activation, layernorm)
    ra = activate(a, activation)
    chain = pool(ln(ra, (-3, -2, -1)) if layernorm else ra, size).reshape(3, 2, -1)
    torch.testing.assert_close(z, chain, rtol=1e-12, atol=1e-12)
    (want,) = torch.autograd.grad((chain * xi).sum(), a)
    got = conv_vjp(a.detach(), r.detach(), z.detach(), xi, g, activation, layernorm)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert want.abs().max() > 1e-3


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("R", [1, 3])
def test_patch_convolution_and_its_weight_gradient_are_torch_convolutions(shared, batch, k, R):
    """The GEMM-on-patches convolution equals F.conv2d per replica, and its weight gradient autograd of F.conv2d
    (one replica: plain matrix products; several with their own inputs: batched ones)."""
    from ibhebb.functional.conv import patch_conv2d, patch_conv2d_weight_grad, patches

    C, O, H, W = 4, 5, 7, 6
    gen = torch.Generator().manual_seed(k + 10 * batch)
    h = torch.randn(*(() if shared else (R,)), batch, C, H, W, generator=gen, dtype=torch.float64)
    w = torch.randn(R, O, C, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(R, O, generator=gen, dtype=torch.float64)
    cot = torch.randn(R, batch, O, H, W, generator=gen, dtype=torch.float64)
    cols = patches(h, k, k // 2)
    got = patch_conv2d(cols, w.detach(), b, (H, W))
    want = torch.stack([torch.nn.functional.conv2d(h if shared else h[r], w[r], b[r], padding=k // 2) for r in range(R)])
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    (gw,) = torch.autograd.grad((want * cot).sum(), w)
    torch.testing.assert_close(patch_conv2d_weight_grad(cols, cot, w.shape), gw, rtol=1e-10, atol=1e-12)


def toy_images(n, seed):
    """Class 0: a vertical bar, class 1: a horizontal bar, anywhere in a noisy 8×8 image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    pos = torch.randint(1, 7, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    idx = torch.arange(n)
    vertical, horizontal = y == 0, y == 1
    x[idx[vertical], 0, :, pos[vertical]] += 1.5
    x[idx[horizontal], 0, pos[horizontal], :] += 1.5
    return x, y


def test_small_cnn_learns_toy_image_task(one_thread):
    x, y = toy_images(600, 0)
    xt, yt = toy_images(300, 1)
    model = CNN((1, 8, 8), [4, 8], 2, replicas=3, seed=0, layernorm=True)
    rule = make_rule("biohsic", model, RuleConfig(variant="exact", window=8, gamma=2.0, sigmas=[1.0, 0.5, 1.0]))
    opt = torch.optim.Adam(rule.trainable(), lr=3e-3)
    w0 = model.hidden[0].weight.detach().clone()
    def accuracy():
        return (model(xt).argmax(-1) == yt).double().mean(-1)
    assert accuracy().max() < 0.7
    for i in range(len(x)):
        for _ in rule.updates(x[i : i + 1], y[i : i + 1]):
            opt.step()
            opt.zero_grad()
    assert accuracy().min() > 0.9
    assert (model.hidden[0].weight - w0).abs().max() > 1e-3


def test_cnn_refuses_vector_data():
    with pytest.raises(ConfigError, match="cnn"):
        load_config(None, ["model.kind=cnn", "data.name=xor"])
    cfg = load_config(None, ["model.kind=cnn"])
    long = torch.long
    vectors = Dataset("xor", torch.zeros(4, 2), torch.zeros(4, dtype=long), torch.zeros(2, 2), torch.zeros(2, dtype=long), 2)
    with pytest.raises(ConfigError, match="images"):
        build_model(cfg, vectors)
    with pytest.raises(ConfigError, match="augment"):
        load_config(None, ["data.augment=true", "data.name=linear"])


# -- augmentation --------------------------------------------------------------------------------


def test_crop_and_flip_on_a_hand_made_image():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)  # rows 1..4, 5..8, 9..12, 13..16
    shift = crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([False]), pad=1)
    # offset (0, 2) of the padded image: one row of padding on top, the columns moved left by one
    assert shift[0, 0].tolist() == [[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]]
    centre_flip = crop_flip(x, torch.tensor([1]), torch.tensor([1]), torch.tensor([True]), pad=1)
    assert torch.equal(centre_flip, x.flip(-1))
    assert torch.equal(crop_flip(x, torch.tensor([1]), torch.tensor([1]), torch.tensor([False]), pad=1), x)


def test_augmentation_deterministic_per_seed_and_epoch_and_correct():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    a = augment_images(x, seed=1, epoch=3)
    torch.testing.assert_close(a, augment_images(x, seed=1, epoch=3), rtol=0, atol=0)
    assert not torch.equal(a, augment_images(x, seed=1, epoch=4))
    assert not torch.equal(a, augment_images(x, seed=2, epoch=3))
    dy, dx, flip = augment_draws(64, 1, 3, 2)
    assert 0.2 < flip.double().mean() < 0.8 and dy.min() >= 0 and dy.max() <= 4 and len(set(dx.tolist())) == 5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(64):  # each image is its own padded crop at the drawn offset, mirrored if drawn
        want = padded[n, :, dy[n] : dy[n] + 8, dx[n] : dx[n] + 8]
        torch.testing.assert_close(a[n], want.flip(-1) if flip[n] else want, rtol=0, atol=0)


# -- CIFAR-10 pipeline on files in the official format -------------------------------------------


def write_cifar(root, n=8):
    where = root / "cifar10" / "cifar-10-batches-py"
    where.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, n)], b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (where / name).write_bytes(pickle.dumps(batch, protocol=2))
    (where / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in where.iterdir()}


@pytest.mark.parametrize("config", ["fig5-cifar10", "fig5-cifar10-backprop", "fig5-cifar10-last-layer"])
def test_cifar10_configs_train_on_official_format_files(tmp_path, config, one_thread, monkeypatch):
    from pathlib import Path

    from ibhebb.data import cifar10
    from ibhebb.train import train

    monkeypatch.setattr(cifar10, "MD5", write_cifar(tmp_path))  # the official checksums cannot match these files
    path = Path(__file__).resolve().parents[1] / "configs" / f"{config}.toml"
    overrides = [f"data.root={tmp_path}", "epochs=2", "model.channels=[4,8]", "eval.hsic_samples=4"]
    summary = train(path, tmp_path / "run", overrides, progress=False)
    assert summary["epochs"] == 2 and summary["data"] == "cifar10" and summary["model"] == "cnn"
    assert len(summary["test_accuracy"]) == 1
