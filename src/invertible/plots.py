"""Pictures of flows and runs, drawn with matplotlib's object API (no display, no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure`
writes one atomically (the format follows the file suffix).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .persistence import atomic_write

__all__ = ["save_figure", "loss_curve", "density_grid", "density_colours", "density_2d", "image_grid"]


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    """Render ``fig`` and write it to ``path`` atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def loss_curve(records: Sequence[dict[str, Any]], title: str = "", train_shift: float = 0.0) -> Figure:
    """Training loss and validation NLL (nats) against the step, from ``metrics.jsonl`` records.

    The validation NLL is in the data's units; the training loss, in the space the model sees, is drawn as
    ``loss - train_shift``, with ``train_shift`` the log-det of the preprocessing between them (a table's
    standardisation: ``-sum_j log std_j``), so that both curves are NLLs of the same data.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    train = [(r["step"], r["loss"] - train_shift) for r in records if r.get("split") == "train" and "loss" in r]
    val = [(r["step"], r["val_nll"]) for r in records if r.get("split") == "val" and "val_nll" in r]
    if train:
        ax.plot(*zip(*train), "o-" if len(train) == 1 else "-", label="train loss (data space)", lw=1, ms=3)
    if val:
        ax.plot(*zip(*val), "o-", label="validation NLL (data space)", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("negative log-likelihood (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    return fig


def _extent(points: np.ndarray, margin: float = 0.05) -> tuple[float, float, float, float]:
    lo, hi = np.quantile(points, 0.005, axis=0), np.quantile(points, 0.995, axis=0)
    pad = (hi - lo) * margin + 1e-6
    return float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])


@torch.no_grad()
def density_grid(
    flow: torch.nn.Module,
    extent: Sequence[float],
    resolution: int = 200,
    batch_size: int = 8192,
    preprocess: torch.nn.Module | None = None,
    log: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exp(log q(x))`` of a 2-D flow on a ``resolution x resolution`` grid: ``(xs, ys, density)`` (with ``log``,
    ``log q(x)`` itself), in float64.

    With ``preprocess`` (the bijection ``y, ladj = preprocess(x)`` from raw data to the flow's
    space, e.g. standardisation) the grid lies in raw data space and the density is
    ``exp(log q(preprocess(x)) + ladj)``.
    """
    x0, x1, y0, y1 = extent
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    param = next(iter(flow.parameters()), torch.zeros(()))
    points = torch.as_tensor(grid, dtype=param.dtype, device=param.device)
    preprocess = None if preprocess is None else preprocess.to(points.device)

    def log_p(x: Tensor) -> Tensor:
        if preprocess is None:
            return flow.log_prob(x)
        y, ladj = preprocess(x)
        return flow.log_prob(y) + ladj

    log_q = torch.cat([log_p(points[i : i + batch_size]) for i in range(0, len(points), batch_size)])
    log_q = log_q.double().cpu().numpy().reshape(resolution, resolution)
    return xs, ys, log_q if log else np.exp(log_q)


def density_colours(log_q: np.ndarray) -> tuple[np.ndarray, float | None, int]:
    """``exp(log q)`` of the finite grid values in float64 (float32 underflowed below ``log q = -103``; NaN where
    ``log q`` is not finite), the top of its colour scale (the 99.5th percentile, so that a spike on a few grid
    points leaves the rest of the density visible; ``None``, matplotlib's own, where it is 0), and the number of grid
    points whose ``log q`` is not finite."""
    finite = np.isfinite(log_q)
    density = np.where(finite, np.exp(np.where(finite, log_q, -np.inf)), np.nan)
    top = float(np.quantile(density[finite], 0.995)) if finite.any() else 0.0
    return density, top if top > 0 else None, int((~finite).sum())


@torch.no_grad()
def density_2d(
    flow: torch.nn.Module,
    data: Tensor,
    samples: Tensor | None = None,
    resolution: int = 200,
    preprocess: torch.nn.Module | None = None,
) -> Figure:
    """The learned density ``exp(log q)`` on a grid, the data, and the flow's samples, side by side.

    The density's colour scale tops out at the 99.5th percentile of the grid (a spike on a few points would leave
    the rest dark, :func:`density_colours`); grid points of a non-finite log-density are red and counted in the
    title, as are samples that are not finite or fall outside the window.

    ``data`` and ``samples`` are in the flow's space. With ``preprocess`` (the bijection from raw
    data to that space, a bundle's ``preprocess``) all three panels are drawn in raw data space:
    the data and samples mapped back by ``preprocess.inverse``, the density with its log-det.
    """
    if preprocess is not None:
        device = next(iter(flow.parameters()), data).device
        preprocess = preprocess.to(device)
        data = preprocess.inverse(data.to(device))[0]
        samples = None if samples is None else preprocess.inverse(samples.to(device))[0]
    data_np = data.detach().cpu().numpy()
    extent = _extent(data_np)
    panels = 2 if samples is None else 3
    fig = Figure(figsize=(4 * panels, 4), layout="constrained")
    axes = fig.subplots(1, panels)
    xs, ys, log_q = density_grid(flow, extent, resolution, preprocess=preprocess, log=True)
    dens, top, bad = density_colours(log_q)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="red")
    axes[0].pcolormesh(xs, ys, np.ma.masked_invalid(dens), shading="auto", cmap=cmap, vmin=0.0, vmax=top)
    axes[0].set_title("learned density" + (f" ({bad} grid points not finite, red)" if bad else ""))
    hist = dict(bins=resolution // 2, range=[extent[:2], extent[2:]], cmap="viridis")
    axes[1].hist2d(data_np[:, 0], data_np[:, 1], **hist)
    axes[1].set_title(f"data ({len(data_np)} points)")
    if samples is not None:
        s = samples.detach().cpu().numpy()
        finite = np.isfinite(s).all(axis=1)
        axes[2].hist2d(s[finite, 0], s[finite, 1], **hist)
        inside = int((finite & (s[:, 0] >= extent[0]) & (s[:, 0] <= extent[1]) & (s[:, 1] >= extent[2])
                      & (s[:, 1] <= extent[3])).sum())
        counted = f"{len(s)}" if finite.all() else f"{int(finite.sum())} of {len(s)} finite"
        outside = f", {int(finite.sum()) - inside} outside the window" if inside < finite.sum() else ""
        axes[2].set_title(f"samples ({counted}{outside})")
    for ax in axes:
        if preprocess is None:
            ax.set_aspect("equal")
        else:  # raw features have their own units: square panels instead of equal scales
            ax.set_box_aspect(1)
        ax.set_xlim(*extent[:2])
        ax.set_ylim(*extent[2:])
    return fig


def image_grid(images: Tensor | np.ndarray, nrow: int | None = None, title: str = "", row_labels: Sequence[str] | None = None) -> Figure:
    """Images ``(n, C, H, W)`` with values in ``[0, 1]`` tiled into one picture, ``nrow`` per row.

    One channel is drawn in grey, three as RGB, on a mid-grey frame (white or black would merge with the ink of
    binary images). ``row_labels`` name the rows (class labels of conditional samples, interpolation pairs).
    Pixels that are not finite (samples that overflowed) are drawn red, and the title counts their images.
    """
    a = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, 1 or 3, H, W), got {a.shape}")
    n, c, h, w = a.shape
    bad = ~np.isfinite(a)
    broken = int(bad.reshape(n, -1).any(1).sum())
    if broken:  # red needs colour: grey images are drawn as RGB
        red = np.array([1.0, 0.0, 0.0])[None, :, None, None]
        a = np.where(bad.any(1, keepdims=True), red, np.repeat(a, 3 // c, axis=1))
        c = 3
        title = f"{title} ({broken} of {n} images not finite, red)".lstrip()
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    pad = 1
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 0.5)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = a[i].transpose(1, 2, 0)
    canvas = np.clip(canvas, 0.0, 1.0)
    fig = Figure(figsize=(max(2.0, 0.6 * nrow * max(w, 8) / 8), max(2.0, 0.6 * rows * max(h, 8) / 8)))
    ax = fig.add_subplot()
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(len(row_labels))], list(row_labels))
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig
