"""Pictures of the variational results: learned vs true 2-D densities, image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..plots import density_colours  # noqa: E402
from .targets import Target  # noqa: E402

__all__ = ["plot_fit", "save_grid"]


@torch.no_grad()
def plot_fit(q, target: Target, path: str | Path, points: int = 200, title: str = "") -> None:
    """True density ``p = exp(log p~ - log Z)`` beside the learned ``q`` (exact ``q.log_prob`` on a grid), as PNG,
    each with its colour scale capped at its 99.5th percentile (:func:`~invertible.plots.density_colours`)."""
    (a, b), (c, d) = target.view
    xs, ys = torch.linspace(a, b, points), torch.linspace(c, d, points)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    true = (target(grid.double()) - target.log_z()).reshape(points, points)
    learned = torch.cat([q.log_prob(g) for g in grid.split(10_000)]).reshape(points, points)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="red")
    for ax, log_p, name in zip(axes, (true, learned), (f"true {target.name}", title or "learned q")):
        density, top, bad = density_colours(log_p.double().numpy())  # the colours of plots.density_2d
        ax.imshow(np.ma.masked_invalid(density), origin="lower", extent=(a, b, c, d), cmap=cmap, vmin=0.0, vmax=top,
                  aspect="auto")
        ax.set_title(name + (f" ({bad} grid points not finite, red)" if bad else ""))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_grid(images: Tensor, path: str | Path, nrow: int = 10) -> None:
    """Images ``(n, 1, H, W)`` in ``[0, 1]`` tiled ``nrow`` per row with a 1-pixel mid-grey border (white merged with
    the ink of binary images), as a grey PNG."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()[:, 0]
    n, h, w = x.shape
    rows = -(-n // nrow)
    canvas = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), 0.5, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = x[i]
    scale = max(1, 224 // max(h, w) // 2)
    plt.imsave(path, np.kron(canvas, np.ones((scale, scale))), cmap="gray", vmin=0, vmax=1)
