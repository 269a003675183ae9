"""Training-time image augmentation: random crop after zero padding, and horizontal flip.

One call augments a whole training set at once, on whatever device it lives
on, with one strided copy per offset: output pixel ``(c, i, j)`` of image ``n`` is

    x'[n, c, i, j] = pad(x)[n, c, i + dy_n, j' + dx_n],   j' = W - 1 - j if flip_n else j

with ``dy_n, dx_n ~ U{0, …, 2·pad}`` and ``flip_n ~ Bernoulli(½)``. Padding is
with zeros of the *normalised* images, i.e. the mean colour. The draws depend
only on ``(seed, epoch)``, so a resumed run sees the same augmented epoch.
"""
from __future__ import annotations

import torch
from torch import Tensor


def augment_draws(n: int, seed: int, epoch: int, pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(dy, dx, flip)`` for ``n`` images: offsets in ``[0, 2·pad]`` and flip flags, fixed by ``(seed, epoch)``."""
    g = torch.Generator().manual_seed(104_729 * seed + 15_485_863 * (epoch + 1))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return offsets[0], offsets[1], flip


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Crop each zero-padded image ``x[n]`` ``(C, H, W)`` at offset ``(dy[n], dx[n])`` and mirror it where ``flip[n]``.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(9.).view(1, 1, 3, 3)
    >>> crop_flip(x, torch.tensor([1]), torch.tensor([2]), torch.tensor([True]), pad=1)[0, 0]
    tensor([[0., 2., 1.],
            [0., 5., 4.],
            [0., 8., 7.]])
    """
    h, w = x.shape[-2:]
    dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    code = dy * (2 * pad + 1) + dx
    for k in torch.unique(code).tolist():  # at most (2·pad + 1)² offsets: one strided copy each
        idx = (code == k).nonzero().squeeze(1)
        oy, ox = divmod(k, 2 * pad + 1)
        out[idx] = xp[idx, :, oy : oy + h, ox : ox + w]
    idx = flip.nonzero().squeeze(1)
    out[idx] = out[idx].flip(-1)
    return out


def augment_images(x: Tensor, seed: int, epoch: int, pad: int = 2) -> Tensor:
    """A randomly cropped (padding ``pad``) and flipped copy of images ``x`` ``(n, C, H, W)`` for one epoch."""
    if x.dim() != 4:
        raise ValueError(f"augmentation needs images (n, C, H, W), got shape {tuple(x.shape)}")
    dy, dx, flip = augment_draws(len(x), seed, epoch, pad)
    return crop_flip(x, dy, dx, flip, pad)
