"""``invertible fit-density``: fit a flow to an unnormalized 2-D target by maximising the ELBO.

Writes ``OUT/density.png`` (true density beside the learned one, as in Figure 3
of Rezende & Mohamed 2015), ``OUT/summary.json`` (ELBO, importance-sampling
``log Z``, true ``log Z`` by quadrature, ``KL = log Z - ELBO``, ESS) and
``OUT/metrics.jsonl`` (the ELBO curve), and saves the flow to ``OUT/model``.
An ``OUT`` that already holds any of these is refused: results are never overwritten. A fit that fails
(a divergence, Ctrl-C, SIGTERM) removes what it wrote, so the same ``OUT`` can be used again.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch

from ..persistence import report_json, write_json
from ._common import output_dir, results_kept_on_success, seed_argument

__all__ = ["register", "run"]

#: What a fit writes to ``--out``; a directory holding any of them is refused (an earlier fit's results).
RESULTS = ("model", "summary.json", "metrics.jsonl", "density.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..variational import ESTIMATORS, FAMILIES, TARGETS

    p.add_argument("--target", required=True, choices=sorted(TARGETS), help="unnormalized 2-D target density")
    p.add_argument("--model", default="planar", choices=list(FAMILIES), help="flow family (default: %(default)s)")
    defaults = ", ".join(f"{k} {v}" for k, v in FAMILIES.items())
    p.add_argument("--layers", type=int, default=None, help=f"number of flow layers K (default: {defaults})")
    p.add_argument("--steps", type=int, default=10_000, help="Adam steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="samples of q per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of Adam (default: %(default)s)")
    p.add_argument(
        "--estimator",
        default="reparam",
        choices=ESTIMATORS,
        help="ELBO gradient: reparam differentiates through the samples, reinforce is the score-function"
        " estimator with a leave-one-out baseline, for targets without gradients (default: %(default)s)",
    )
    p.add_argument("--anneal", type=int, default=0, help="steps of linear annealing of the target from 0.01 to 1 (0: off)")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=100_000,
        help="samples of q for the final ELBO, importance-sampled log Z and ESS (default: %(default)s)",
    )
    p.add_argument("--seed", type=seed_argument, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory; one that holds an earlier fit's results is refused")


@contextlib.contextmanager
def _diverged_is_a_training_error():
    try:
        yield
    except FloatingPointError as e:
        from ..train import TrainingError  # the CLI's "failed run" error (exit status 2)

        raise TrainingError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    from ..variational import FAMILIES, approximation, fit, get_target
    from ..variational.pictures import plot_fit

    if args.layers is None:
        args.layers = FAMILIES[args.model]
    for flag in ("layers", "steps", "batch_size", "eval_samples"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not args.lr > 0 or args.anneal < 0:
        raise ValueError(f"--lr must be positive and --anneal >= 0, got {args.lr} and {args.anneal}")
    if args.estimator == "reinforce" and args.batch_size < 2:
        raise ValueError(f"--estimator reinforce needs --batch-size >= 2 (its leave-one-out baseline), got {args.batch_size}")
    torch.manual_seed(args.seed)
    target = get_target(args.target)
    out = output_dir(args.out, RESULTS)
    flow = approximation(args.model, args.layers)
    with results_kept_on_success(out, RESULTS):  # a failed fit leaves --out as it found it
        with open(out / "metrics.jsonl", "w") as log, _diverged_is_a_training_error():
            result = fit(
                flow,
                target,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                estimator=args.estimator,
                anneal_steps=args.anneal,
                eval_samples=args.eval_samples,
                log_every=max(1, min(500, args.steps // 20)),
                callback=lambda r: (log.write(json.dumps(r) + "\n"), log.flush()),  # readable while it runs, as vae's
            )
        flow.save(str(out / "model"))
        title = f"{args.model} K={args.layers}, KL={result.kl:.3f}"
        plot_fit(flow, target, out / "density.png", title=title)
        summary = {"target": args.target, "model": args.model, "layers": args.layers, **result.summary(),
                   "estimator": args.estimator, "anneal": args.anneal, "lr": args.lr, "batch_size": args.batch_size,
                   "eval_samples": args.eval_samples, "seed": args.seed}
        write_json(out / "summary.json", summary, report=True)
    print(report_json(summary))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit-density`` subcommand."""
    p = subparsers.add_parser(
        "fit-density", help="fit a flow to an unnormalized 2-D density (reverse KL)", description=__doc__.replace("``", "")
    )
    add_arguments(p)
    p.set_defaults(command=run)
