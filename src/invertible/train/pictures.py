"""The pictures of a run directory: ``loss.png`` always, ``density.png`` for unconditional 2-D data
(continuous models: a discrete one has no density on a grid), ``samples.png`` (temperature 0.7 for a flow; a
row per class when conditional) for image data and for vectors that are images (``picture_shape``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..core import Flow
from ..data import DataBundle
from ..data.images import shows_images, unit_pixels
from ..plots import density_2d, image_grid, loss_curve, save_figure
from .evaluate import evaluation_mode, model_samples, preprocess_ladj

__all__ = ["draw_run"]


def draw_run(run_dir: str | Path, flow: Flow, bundle: DataBundle, records: Sequence[dict[str, Any]], seed: int) -> list[Path]:
    """Draw the run's figures into ``run_dir``; returns their paths.

    The flow is drawn in evaluation mode, as ``test_nll`` is computed, and left in the mode it came in: in training
    mode a MADE mask pool loads the next mask set at every ``log_prob`` call (the density grid became a patchwork of
    single mask sets, not the ensemble) and batch norm uses the statistics of each batch of grid points.
    """
    run_dir = Path(run_dir)
    with evaluation_mode(flow):
        return _draw(run_dir, flow, bundle, records, seed)


def _draw(run_dir: Path, flow: Flow, bundle: DataBundle, records: Sequence[dict[str, Any]], seed: int) -> list[Path]:
    """:func:`draw_run` with the flow already in evaluation mode."""
    paths = [run_dir / "loss.png"]
    title = f"{flow.config['model'] if flow.config else 'flow'} on {bundle.name}"
    save_figure(loss_curve(records, title=title, train_shift=_training_log_det(bundle)), paths[0])
    if tuple(bundle.event_shape) == (2,) and bundle.context_features is None and isinstance(flow, Flow):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = flow.sample(min(len(bundle.test), 20000))
        paths.append(run_dir / "density.png")
        preprocess = None if bundle.raw else bundle.preprocess  # drawn in raw data space, as test_nll is reported
        save_figure(density_2d(flow, bundle.test, samples, preprocess=preprocess), paths[-1])
    if shows_images(bundle):
        paths.append(run_dir / "samples.png")
        save_figure(_image_samples(flow, bundle, seed), paths[-1])
    return paths


@torch.no_grad()
def _training_log_det(bundle: DataBundle, rows: int = 10_000) -> float:
    """The mean log-det of the preprocessing over the first ``rows`` training rows: the training loss of a bundle
    stored in the model's space (a standardised table, logits dequantized once) minus it is an NLL in the data's
    units, as the validation's; 0 for raw bundles, whose loss already counts the preprocessing, and for data
    without one. Exact for a standardisation (the same log-det for every row), an estimate otherwise."""
    if bundle.raw or bundle.preprocess is None:
        return 0.0
    held = next(iter([*bundle.preprocess.parameters(), *bundle.preprocess.buffers()]), None)
    y = bundle.train[:rows]
    return float(preprocess_ladj(bundle, y if held is None else y.to(held.device)).mean())


@torch.no_grad()
def _image_samples(flow: Flow | torch.nn.Module, bundle: DataBundle, seed: int, per_row: int = 8,
                   temperature: float = 0.7):
    """A grid of the model's samples as pictures: a flow's at ``temperature``, a discrete model's (a Bernoulli
    MADE, which has none) as drawn; mapped back to pixels by the bundle's preprocessing, vectors shaped as
    ``bundle.picture_shape``."""
    classes = flow.context_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if classes is None:
            context, labels = None, None
        else:
            k = min(classes, 10)
            context = torch.eye(classes)[:k].repeat_interleave(per_row, 0).to(next(flow.parameters()).device)
            labels = (bundle.class_names or [str(i) for i in range(classes)])[:k]
        x = model_samples(flow, per_row * per_row, context, temperature)
    title = f"samples, T = {temperature}" if isinstance(flow, Flow) else "samples"
    return image_grid(unit_pixels(bundle, x.cpu()), nrow=per_row, title=title, row_labels=labels)
