"""``invertible interpolate RUN --out FILE.png``: decode straight lines between the latents of test images.

For pairs of test images ``a, b`` of the run's dataset, ``z = f(x)`` maps both
to the latent space, ``z_t = (1 - t) z_a + t z_b`` for ``t`` in ``[0, 1]``, and
``x_t = f^{-1}(z_t)`` is drawn, one row per pair (Kingma & Dhariwal 2018,
Section 5.2, for Glow).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor

from ..core import Flow
from ..persistence import load
from ..train.distributed import resolve_device
from ..train.evaluate import seeded_rng, to_model_space
from ._common import existing_run, run_bundle, run_config

__all__ = ["register", "latent_interpolation"]


@torch.no_grad()
def latent_interpolation(flow: Flow, a: Tensor, b: Tensor, steps: int, context: Tensor | None = None) -> Tensor:
    """``(pairs, steps, *event_shape)``: ``f^{-1}((1 - t) f(a) + t f(b))`` at ``steps`` evenly spaced ``t``.

    With a context (one row per pair, e.g. the label of ``a``), both ends are
    encoded and decoded under it.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    z_a, _ = flow.transform(a, context)
    z_b, _ = flow.transform(b, context)
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).view(1, steps, *([1] * (a.dim() - 1)))
    z = (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)
    ctx = None if context is None else context.repeat_interleave(steps, 0)
    x, _ = flow.transform.inverse(z.flatten(0, 1), ctx)
    return x.view(a.shape[0], steps, *a.shape[1:])


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("interpolate", help="latent interpolations between test images (PNG)", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory written by `invertible train` on image data")
    p.add_argument("--out", required=True, help="output .png file")
    p.add_argument("--pairs", type=int, default=4, help="number of image pairs (rows)")
    p.add_argument("--steps", type=int, default=8, help="images per row, ends included")
    p.add_argument("--seed", type=int, default=0, help="random seed that picks the pairs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    from ..data.images import unit_pixels
    from ..plots import image_grid, save_figure

    if args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must end in .png, got {args.out!r}")
    run_dir = existing_run(args.run)
    bundle = run_bundle(run_dir, "interpolate needs the test images of the run's dataset")
    if len(bundle.event_shape) != 3:
        raise ValueError(f"dataset {bundle.name!r} does not hold images")
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device).eval()
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(bundle.test), generator=g)[: 2 * args.pairs]
    if len(idx) < 2 * args.pairs:
        raise ValueError(f"the test split has {len(bundle.test)} images; --pairs {args.pairs} needs {2 * args.pairs}")
    with seeded_rng(args.seed, device):  # dequantization noise of raw bundles
        a, _ = to_model_space(bundle, bundle.test[idx[: args.pairs]].to(device))
        b, _ = to_model_space(bundle, bundle.test[idx[args.pairs :]].to(device))
    context = None if bundle.test_context is None else bundle.test_context[idx[: args.pairs]].to(device)
    x = latent_interpolation(flow, a, b, args.steps, context)
    pixels = unit_pixels(bundle, x.flatten(0, 1).cpu())
    model = run_config(run_dir).get("model", "flow")
    save_figure(image_grid(pixels, nrow=args.steps, title=f"{model}: latent interpolations"), args.out)
    print(f"wrote {args.pairs} interpolations of {args.steps} steps to {args.out}", file=sys.stderr)
    return 0
