"""``invertible decode RUN --latents Z.npy --out FILE``: the data points ``x = f^{-1}(z)`` of given latents.

The inverse of `invertible encode`. --latents holds one latent per row, of
the flow's event shape, or flattened to one row of values each (a .csv): edit
them, interpolate between them, or encode under one context and decode under
another. The points are written as `invertible sample` writes samples:
.npy or .csv values in the space the model saw, or with --raw in the data's
units; a .png file is a picture grid of an image model's points. A
conditional flow decodes under --label K (every row) or --context FILE.npy
(one vector, or one row per latent).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from ..core import Flow, flow_dtype
from ..data.tabular import load_npy, parse_csv
from ._common import check_array_path, check_latent_space
from .sample import write_points


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("decode", help="map latents back to data through a trained flow",
                              description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    p.add_argument("--latents", required=True, metavar="FILE", help="the latents: .npy or .csv, one per row")
    p.add_argument("--out", required=True, help="output file: .npy or .csv (values), .png (image grid)")
    p.add_argument("--label", help="class of a class-conditional flow (one-hot context): a class name the run "
                                   "records, or a label index")
    p.add_argument("--context", metavar="FILE.npy", help="conditioning vectors, shape (C,) or (n, C), for conditional flows")
    p.add_argument("--raw", action="store_true", help="undo the dataset's preprocessing (the run's own; older runs load their dataset)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--float64", action="store_true",
                   help="decode with the model cast to float64 (values written in float64), for points beyond the "
                        "float32 range, which a warning names")
    p.set_defaults(command=run)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    latents = read_latents(args.latents)

    def decode(flow: torch.nn.Module, context: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        check_latent_space(flow, args.run)
        z = _event_rows(latents, flow, args.latents).to(device, flow_dtype(flow))
        if not bool(torch.isfinite(z).all()):  # finite in the file (read_latents), so beyond the flow's dtype
            raise ValueError(f"--latents {args.latents} holds values beyond the {z.dtype} range "
                             f"(+-{torch.finfo(z.dtype).max:.3g}): pass --float64")
        return flow.decode(z, context)

    return write_points(args, len(latents), decode, "decoded points", "decoded latents")


def read_latents(path: str) -> np.ndarray:
    """The array of latents in ``path`` (``.npy``, or ``.csv`` of comma-separated rows, as the data readers take
    them: an optional header row, a byte-order mark), at least 2-D, of finite real numbers, one latent per row;
    ``ValueError`` naming the file otherwise."""
    check_array_path(path, "--latents")
    try:
        values = load_npy(Path(path)) if Path(path).suffix.lower() == ".npy" else parse_csv(Path(path), ",")[0]
    except ValueError as e:
        raise ValueError(f"--latents {e}") from None
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_) or np.iscomplexobj(values):
        raise ValueError(f"--latents {path} holds values of dtype {values.dtype}; expected real numbers")
    if values.ndim < 2 or len(values) == 0:
        raise ValueError(f"--latents {path} has shape {values.shape}; expected one latent per row, (n, ...) with n >= 1")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"--latents {path} holds {bad} non-finite value(s) (NaN or inf)")
    return values


def _event_rows(latents: np.ndarray, flow: Flow, path: str) -> torch.Tensor:
    """``latents`` as a tensor ``(n, *event_shape)`` of ``flow``: of that shape already, or rows of its values
    flattened; ``ValueError`` naming the file for any other shape."""
    shape = tuple(flow.event_shape)
    if latents.shape[1:] != shape and latents.shape[1:] != (math.prod(shape),):
        flat = f", or (n, {math.prod(shape)}) flattened" if len(shape) > 1 else ""
        raise ValueError(f"--latents {path} has shape {latents.shape}; this flow's latents have shape "
                         f"(n, {', '.join(map(str, shape))}){flat}")
    return torch.as_tensor(latents).reshape(len(latents), *shape)
