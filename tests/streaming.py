"""Shared harness of the online-rule learning tests: a two-blob stream, one sample at a time."""
import torch

from ibhebb.functional.phsic import label_kernel_matrix, phsic_objective
from ibhebb.rules import make_rule


def blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    centres = torch.tensor([[2.0, 0, 0, 0, 0], [-2.0, 0, 0, 0, 0]])
    return centres[y] + 0.7 * torch.randn(n, 5, generator=g), y


def stream_on_blobs(model, cfg, lr, gamma):
    """Train ``model`` with ``cfg``'s rule on 300 streamed samples (SGD ``lr``).

    Returns the first layer's pHSIC objective on 200 held-out samples before and
    after, and each replica's held-out accuracy after.
    """
    rule = make_rule(cfg.name, model, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = blobs(200, 1)
    Ky = label_kernel_matrix(yt, 2)

    def objective():
        with torch.no_grad():
            return phsic_objective(rule.layer_kernel(model.local_forward(0, xt)[0]), Ky, gamma)

    before = objective()
    x, y = blobs(300, 2)
    for i in range(len(x)):
        for _ in rule.updates(x[i : i + 1], y[i : i + 1]):
            opt.step()
            opt.zero_grad()
    after = objective()
    with torch.no_grad():
        acc = (model(xt).argmax(-1) == yt).double().mean(-1)
    return before, after, acc
