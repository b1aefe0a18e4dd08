"""Pictures of the variational results: learned vs true 2-D densities, image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .targets import Target  # noqa: E402

__all__ = ["plot_fit", "save_grid"]


@torch.no_grad()
def plot_fit(q, target: Target, path: str | Path, points: int = 200, title: str = "") -> None:
    """True density ``p = exp(log p~ - log Z)`` beside the learned ``q`` (exact ``q.log_prob`` on a grid), as PNG."""
    (a, b), (c, d) = target.view
    xs, ys = torch.linspace(a, b, points), torch.linspace(c, d, points)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    true = torch.exp(target(grid.double()) - target.log_z()).reshape(points, points)
    learned = torch.cat([torch.exp(q.log_prob(g)) for g in grid.split(10_000)]).reshape(points, points)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, img, name in zip(axes, (true, learned), (f"true {target.name}", title or "learned q")):
        ax.imshow(img.numpy(), origin="lower", extent=(a, b, c, d), cmap="viridis", aspect="auto")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_grid(images: Tensor, path: str | Path, nrow: int = 10) -> None:
    """Images ``(n, 1, H, W)`` in ``[0, 1]`` tiled ``nrow`` per row with a 1-pixel border, as a grey PNG."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()[:, 0]
    n, h, w = x.shape
    rows = -(-n // nrow)
    canvas = np.ones((rows * (h + 1) + 1, nrow * (w + 1) + 1), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = x[i]
    scale = max(1, 224 // max(h, w) // 2)
    plt.imsave(path, np.kron(canvas, np.ones((scale, scale))), cmap="gray", vmin=0, vmax=1)
