"""The pictures of a run directory: ``loss.png`` always, ``density.png`` for unconditional 2-D data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..core import Flow
from ..data import DataBundle
from ..plots import density_2d, loss_curve, save_figure

__all__ = ["draw_run"]


def draw_run(run_dir: str | Path, flow: Flow, bundle: DataBundle, records: Sequence[dict[str, Any]], seed: int) -> list[Path]:
    """Draw the run's figures into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    paths = [run_dir / "loss.png"]
    save_figure(loss_curve(records, title=f"{flow.config['model'] if flow.config else 'flow'} on {bundle.name}"), paths[0])
    if tuple(bundle.event_shape) == (2,) and bundle.context_features is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = flow.sample(min(len(bundle.test), 20000))
        paths.append(run_dir / "density.png")
        save_figure(density_2d(flow, bundle.test, samples), paths[-1])
    return paths
