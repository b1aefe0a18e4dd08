"""``invertible sample RUN -n N --out FILE.npy``: draw samples from a trained flow.

With ``--out FILE.png`` an image model writes a picture grid of its samples
(pixels recovered through the run's dataset preprocessing), as does a run on
vectors that are images (``digits_vectors``, drawn 8x8); ``--label K``
draws class-conditional samples of class ``K`` (one-hot context): a class
name the run records (a PNG class folder of its data) or else a label index. ``--raw``
maps samples back to the raw data's units by the run's own preprocessing (the
standardisation statistics of its training split). Both use what the run
stores and need its data file only for runs that store too little (older ones).
Without ``--raw`` the values are in the space the model saw (a table standardised,
images dequantized and logit-mapped), and a ``note:`` on stderr says so.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core import Flow, Transform, flow_dtype
from ..data.tabular import load_npy
from ..persistence import load
from ..train.build import REBUILDABLE, describe_preprocess, read_preprocess_record, rebuild_preprocess
from ..train.distributed import resolve_device
from ..train.evaluate import model_samples
from ._common import (check_array_path, check_not_an_input, existing_run, label_index, named_classes, run_bundle,
                      run_classes, run_config, run_summary, save_array, seed_argument)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="draw samples from a trained flow", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    p.add_argument("-n", "--num", type=int, default=1000, help="number of samples (default: %(default)s)")
    p.add_argument("--out", required=True, help="output file: .npy or .csv (values), .png (image grid)")
    p.add_argument("--label", help="class of a class-conditional flow (one-hot context): a class name the run "
                                   "records, or a label index")
    p.add_argument("--seed", type=seed_argument, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the base noise about the base's mean: x = f^-1(T u) for a standard normal base; "
                        "T < 1 trades diversity for typical samples (default: %(default)s)")
    p.add_argument("--context", metavar="FILE.npy", help="conditioning vectors, shape (C,) or (n, C), for conditional flows")
    p.add_argument("--raw", action="store_true", help="undo the dataset's preprocessing (the run's own; older runs load their dataset)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--float64", action="store_true",
                   help="sample with the model cast to float64 (values written in float64), for points beyond the "
                        "float32 range, which a warning names")
    p.set_defaults(command=run)


def _context(path: str | None, n: int, features: int | None, device: torch.device,
             dtype: torch.dtype) -> torch.Tensor | None:
    """The ``(n, features)`` context of ``--context`` (``None`` for an unconditional flow), in the flow's ``dtype``."""
    if features is None:
        if path is not None:
            raise ValueError("this flow is unconditional; --context is not accepted")
        return None
    if path is None:
        raise ValueError(f"this flow is conditional: pass --context FILE.npy with {features} values per sample")
    values = load_npy(Path(path))
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_) or np.iscomplexobj(values):
        raise ValueError(f"--context {path} holds values of dtype {values.dtype}; expected real numbers")
    if values.shape not in ((features,), (n, features)):
        raise ValueError(f"--context has shape {values.shape}; expected ({features},) or ({n}, {features})")
    return torch.as_tensor(values, dtype=dtype).expand(n, features).to(device)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise ValueError(f"-n must be >= 1, got {args.num}")
    if not 0 < args.temperature < math.inf:
        raise ValueError(f"--temperature must be a finite number > 0, got {args.temperature}")

    def draw(flow: torch.nn.Module, context: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        torch.manual_seed(args.seed)
        return _draw(flow, args.num, context, args.temperature)

    label = "" if args.label is None else f", class {args.label}"
    return write_points(args, args.num, draw, "samples", f"samples, T = {args.temperature:g}{label}")


def write_points(args: argparse.Namespace, n: int,
                 points: Callable[[torch.nn.Module, torch.Tensor | None, torch.device], torch.Tensor], what: str,
                 title: str) -> int:
    """Write to ``args.out`` the ``n`` points (``what``: ``samples``, say) that ``points(model, context, device)``
    makes from the model of run ``args.run`` (loaded onto ``device``), under the context that ``args.label`` or ``args.context`` gives, as
    :mod:`sample <invertible.commands.sample>` describes: values (``args.raw``: in the data's units) or a
    picture grid titled ``title`` after the model's name."""
    grid = args.out.lower().endswith(".png")
    if not grid:
        check_array_path(args.out)
    check_not_an_input(args.out, {"the --latents file": getattr(args, "latents", None), "the --context file": args.context})
    run_dir = existing_run(args.run)
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device)
    if args.float64:
        if device.type == "mps":
            raise ValueError("--float64 needs a device with float64 arithmetic: mps has none; pass --device cpu")
        flow = flow.double()
    if args.label is not None:
        if args.context is not None:
            raise ValueError("give --label or --context, not both")
        if flow.context_features is None:
            raise ValueError(f"this flow is unconditional; --label {args.label} needs a class-conditional flow")
        _check_one_hot(run_dir)
        label = label_index(args.label, run_classes(run_dir), flow.context_features)
        context = torch.nn.functional.one_hot(torch.full((n,), label), flow.context_features).to(device, flow_dtype(flow))
    else:
        if args.context is None and flow.context_features is not None and _one_hot_context(run_dir):
            raise ValueError(f"this flow is class-conditional: pass --label K (K in 0..{flow.context_features - 1}"
                             f"{named_classes(run_classes(run_dir))}) "
                             f"or --context FILE.npy with {flow.context_features} values per sample")
        context = _context(args.context, n, flow.context_features, device, flow_dtype(flow))
    if grid:
        preprocess, levels, shape = _grid_preprocess(run_dir, flow)
    elif args.raw:
        preprocess, _ = _run_preprocess(run_dir, "--raw")
    else:
        preprocess = None
    if args.float64 and preprocess is not None:  # a learned dequantizer maps the float64 points with the model
        preprocess = preprocess.double()
    # read before anything is written: a corrupt record is refused with no output file left behind
    note = None if grid or args.raw else _model_space_note(run_dir, what)
    x = points(flow, context, device)
    if grid:
        from ..data.images import scaled_pixels
        from ..plots import image_grid, save_figure

        pixels = scaled_pixels(x.cpu(), levels, preprocess).reshape(-1, *shape)
        model = run_config(run_dir).get("model", "flow")
        save_figure(image_grid(pixels, title=f"{model} {title}"), args.out)
        print(f"wrote a grid of {n} {what} to {args.out}", file=sys.stderr)
        return 0
    if preprocess is not None:
        finite = torch.isfinite(x.flatten(1)).all(1)
        x, _ = preprocess.to(device).inverse(x)
        lost = int((finite & ~torch.isfinite(x.flatten(1)).all(1)).sum())
        if lost:  # the flow's own warning counted the points that were not finite before this map
            warnings.warn(f"{lost} more of {n} {what} are not finite in the data's units: mapping them back through "
                          f"the run's preprocessing overflowed the {x.dtype} range; pass --float64", RuntimeWarning)
    save_array(args.out, x.cpu().numpy())
    print(f"wrote {n} {what} of shape {tuple(flow.event_shape)} to {args.out}", file=sys.stderr)
    if note is not None:
        print(note, file=sys.stderr)
    return 0


def _model_space_note(run_dir: Path, what: str) -> str | None:
    """The ``note:`` for ``what`` (samples) written without ``--raw`` when they are not in the data's units: the run
    records a preprocessing, or records none but names a dataset (a run written before runs kept their record),
    whose preprocessing may then be a table's standardisation. A bare saved model, known to have none, gets none."""
    record = read_preprocess_record(run_dir)
    if record is not None and record["kind"] != "none":
        return (f"note: the {what} are in the space the model saw, after {describe_preprocess(record)}; "
                "pass --raw for the data's own units")
    if record is None and "data" in run_config(run_dir):
        return (f"note: {run_dir} does not record its data's preprocessing (an older run): if its data were "
                f"preprocessed (a table is standardised by default), the {what} are in that space; pass --raw for "
                "the data's own units")
    return None


def _run_preprocess(run_dir: Path, why: str, levels: bool = False) -> tuple[Transform | None, int | None]:
    """The run's preprocessing and its data's ``levels``: rebuilt from what the run stores, or, for a run
    that stores too little (written before runs kept it, a custom preprocessing, no ``levels`` where they
    are needed), from its dataset, loaded as it was trained (``why`` names what needs it, for the error
    when the run names no dataset)."""
    record = read_preprocess_record(run_dir)
    if record is not None and record["kind"] in REBUILDABLE and (not levels or "levels" in record):
        return rebuild_preprocess(record, run_dir), record.get("levels")
    bundle = run_bundle(run_dir, f"{why} needs the run's dataset to undo its preprocessing")
    return bundle.preprocess, bundle.levels


def _one_hot_context(run_dir: Path) -> bool | None:
    """Whether the run's summary says its training contexts were one-hot class labels; ``None`` when it does
    not say (a bare saved model, runs written before summaries recorded it)."""
    value = run_summary(run_dir).get("one_hot_context")
    return value if isinstance(value, bool) else None


def _check_one_hot(run_dir: Path) -> None:
    """``ValueError`` when the run's summary says its training contexts were not one-hot class labels.

    Runs that do not record it (a bare saved model, runs written before) are not checked.
    """
    if _one_hot_context(run_dir) is False:
        summary = run_summary(run_dir)
        raise ValueError(
            f"--label gives a one-hot context, but this flow was trained on contexts of dataset {summary.get('data')!r} "
            "that are not one-hot class labels: pass --context FILE.npy"
        )


def _draw(model: torch.nn.Module, n: int, context: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """``n`` samples (one per context row when conditional) from the model's own sampler.

    The model's sampler, not ``f^{-1}`` of base noise: a MADE ensemble samples its mixture and
    the Bernoulli MADE, a discrete model, has no base noise (nor a temperature).
    """
    if not isinstance(model, Flow) and temperature != 1.0:
        raise ValueError(f"--temperature scales a flow's base noise; a {type(model).__name__} has none")
    return model_samples(model, n, context, temperature)


def _grid_preprocess(run_dir: Path, flow: Flow) -> tuple[Transform | None, int, tuple[int, ...]]:
    """The preprocessing, pixel levels and image shape that a ``.png`` grid of ``flow``'s samples needs, checked
    before sampling: an image model's event shape, or the ``picture_shape`` of a vector run's images (the summary's,
    ``digits_vectors``: ``(1, 8, 8)``)."""
    shape = tuple(flow.event_shape) if len(flow.event_shape) == 3 else run_summary(run_dir).get("picture_shape")
    if shape is None:
        raise ValueError(f"a .png grid needs an image model; this one draws vectors of shape {tuple(flow.event_shape)} (use .npy or .csv)")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(type(n) is int and n > 0 for n in shape)
            and math.prod(shape) == math.prod(flow.event_shape)):
        raise ValueError(f"corrupt run summary {run_dir / 'summary.json'}: picture_shape {shape!r} is not the (C, H, W) "
                         f"of the model's {math.prod(flow.event_shape)} values")
    preprocess, levels = _run_preprocess(run_dir, "a .png grid", levels=True)
    if levels is None:
        raise ValueError(f"a .png grid needs images of discrete levels; the data of {run_dir} have none")
    return preprocess, levels, tuple(shape)
