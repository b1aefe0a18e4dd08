"""``invertible interpolate RUN --out FILE.png``: decode straight lines between the latents of test images.

For pairs of test images ``a, b`` of the run's dataset (images, or vectors that are images:
``digits_vectors``), ``z = f(x)`` maps both
to the latent space, ``z_t = (1 - t) z_a + t z_b`` for ``t`` in ``[0, 1]``, and
``x_t = f^{-1}(z_t)`` is drawn, one row per pair (Kingma & Dhariwal 2018,
Section 5.2, for Glow).

A class-conditional flow maps each class to the latent space by its own
bijection, ``z = f(x; y)``, so a line joins two images of one class, both
encoded and every point decoded under its label: each row is a pair of test
images of the same class, and ``--label K`` (a class name the run records, or
a label index) draws every pair from class ``K``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor

from ..core import Flow, flow_dtype
from ..data import DataBundle
from ..persistence import load
from ..train.distributed import resolve_device
from ..train.evaluate import seeded_rng, to_model_space
from ._common import check_latent_space, existing_run, label_index, run_bundle, run_classes, run_config, seed_argument

__all__ = ["register", "latent_interpolation"]


@torch.no_grad()
def latent_interpolation(flow: Flow, a: Tensor, b: Tensor, steps: int, context: Tensor | None = None) -> Tensor:
    """``(pairs, steps, *event_shape)``: ``f^{-1}((1 - t) f(a) + t f(b))`` at ``steps`` evenly spaced ``t``.

    With a context (one row per pair: the label ``a`` and ``b`` share), both ends are
    encoded and every point decoded under it.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    z_a, z_b = flow.encode(a, context), flow.encode(b, context)
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).view(1, steps, *([1] * (a.dim() - 1)))
    z = (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)
    ctx = None if context is None else context.unsqueeze(1).expand(-1, steps, -1)
    return flow.decode(z, ctx)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("interpolate", help="latent interpolations between test images (PNG)", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory written by `invertible train` on image data")
    p.add_argument("--out", required=True, help="output .png file")
    p.add_argument("--pairs", type=int, default=4, help="number of image pairs (rows; default: %(default)s)")
    p.add_argument("--steps", type=int, default=8, help="images per row, ends included (default: %(default)s)")
    p.add_argument("--label", help="class of a class-conditional flow to draw every pair from: a class name the run "
                                   "records, or a label index (default: each pair of one class, any class)")
    p.add_argument("--seed", type=seed_argument, default=0, help="random seed that picks the pairs (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(command=run)


def _image_pairs(bundle: DataBundle, pairs: int, seed: int, label: int | None = None) -> tuple[Tensor, Tensor]:
    """Indices ``(a, b)`` into the test split of ``pairs`` pairs of images, in an order drawn by ``seed``: any two
    images without class contexts, else two of one class (class ``label`` when given) for every pair."""
    order = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(seed))
    if bundle.test_context is None:
        if len(order) < 2 * pairs:
            raise ValueError(f"the test split has {len(bundle.test)} images; --pairs {pairs} needs {2 * pairs}")
        return order[:pairs], order[pairs : 2 * pairs]
    classes = bundle.test_context[order].argmax(1)
    if label is not None:
        order, classes = order[classes == label], classes[classes == label]
    return _same_class_pairs(order, classes, pairs, "one class" if label is None else f"class {_class_name(bundle, label)}")


def _class_name(bundle: DataBundle, label: int) -> str:
    """Class ``label`` as the bundle names it (its index for a bundle without class names)."""
    return repr(bundle.class_names[label]) if bundle.class_names else str(label)


def _same_class_pairs(order: Tensor, classes: Tensor, pairs: int, which: str) -> tuple[Tensor, Tensor]:
    """The first ``pairs`` pairs of images of one class along ``order``: each image waits for the next of its
    ``classes``; ``ValueError`` (``which`` naming the classes searched) when there are fewer."""
    waiting: dict[int, int] = {}
    a: list[int] = []
    b: list[int] = []
    for image, c in zip(order.tolist(), classes.tolist()):
        if c not in waiting:
            waiting[c] = image
            continue
        a.append(waiting.pop(c))
        b.append(image)
        if len(a) == pairs:
            return torch.tensor(a), torch.tensor(b)
    raise ValueError(f"the test split holds {len(a)} pair(s) of images of {which}, fewer than --pairs {pairs}")


def run(args: argparse.Namespace) -> int:
    from ..data.images import shows_images, unit_pixels
    from ..plots import image_grid, save_figure

    if args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    if args.steps < 2:
        raise ValueError(f"--steps must be >= 2 (both ends of each row), got {args.steps}")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must end in .png, got {args.out!r}")
    run_dir = existing_run(args.run)
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device).eval()
    check_latent_space(flow, run_dir)
    label = None
    if args.label is not None:
        if flow.context_features is None:
            raise ValueError(f"this flow is unconditional; --label {args.label} needs a class-conditional flow")
        label = label_index(args.label, run_classes(run_dir), flow.context_features)
    bundle = run_bundle(run_dir, "interpolate needs the test images of the run's dataset")
    if not shows_images(bundle):
        raise ValueError(f"dataset {bundle.name!r} does not hold images")
    ia, ib = _image_pairs(bundle, args.pairs, args.seed, label)
    dtype = flow_dtype(flow)
    with seeded_rng(args.seed, device):  # dequantization noise of raw bundles
        a = to_model_space(bundle, bundle.test[ia].to(device))[0].to(dtype)
        b = to_model_space(bundle, bundle.test[ib].to(device))[0].to(dtype)
    context = None if bundle.test_context is None else bundle.test_context[ia].to(device, dtype)
    x = latent_interpolation(flow, a, b, args.steps, context)
    pixels = unit_pixels(bundle, x.flatten(0, 1).cpu())
    model = run_config(run_dir).get("model", "flow")
    title = f"{model}: latent interpolations" + ("" if args.label is None else f", class {args.label}")
    save_figure(image_grid(pixels, nrow=args.steps, title=title), args.out)
    print(f"wrote {args.pairs} interpolations of {args.steps} steps to {args.out}", file=sys.stderr)
    return 0
