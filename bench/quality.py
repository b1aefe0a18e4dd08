"""Density quality at an equal budget: KL gap on toys with exact densities, this project vs its peers.

``python -m bench quality [--models realnvp] [--peers zuko,nflows,normflows]
[--data checkerboard,8gaussians] [--steps 5000] [--batch-size 256] [--seeds 0 1 2]``

Each library's flow (same architecture, see ``bench/_flows.py``) is trained
with the same loop on the same batches (``bench/_training.py``) and scored on
the same test split by the KL gap ``mean_test(log p(x) - log q(x)) = NLL(test) - H(p)``
in nats (0 is perfect). The table gives the mean over seeds and the ratio of
each library's gap to this project's (above 1: the peer is worse).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from invertible.data import load

from .common import add_out, check_device, check_out, csv_list, header, positive, positive_float, require, table, write
from ._flows import MODELS, Spec, build, check_names, parameters
from ._training import check_exact_data, fit, mean_log_prob


def _mean(values: list[float]) -> float:
    """Mean of the finite runs (NaN when every run diverged)."""
    return statistics.mean(values) if values else math.nan


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=csv_list, default=["realnvp"], help="comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--peers", type=csv_list, default=["zuko", "nflows", "normflows"], help="comma-separated peer libraries")
    p.add_argument("--data", type=csv_list, default=["checkerboard", "8gaussians"], help="toys with an exact log_prob")
    p.add_argument("--steps", type=positive, default=5000, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=positive, default=256, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate of Adam (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps before the cosine decay (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=5.0, help="global gradient-norm clip (default: %(default)s)")
    p.add_argument("--layers", type=positive, default=8, help="flow layers (default: %(default)s)")
    p.add_argument(
        "--hidden",
        type=lambda s: tuple(positive(h) for h in csv_list(s)),
        default=(64, 64),
        help="comma-separated hidden sizes of the conditioners (default: 64,64)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of data and training, one run each (default: 0)")
    p.add_argument("--n-train", type=positive, default=50_000, help="training samples drawn from the toy (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=positive, default=1, help="torch intra-op threads (1: as the engine for small flows)")
    add_out(p, "quality")
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    check_device(p, args.device)
    check_exact_data(p, args.data, "--data")
    check_names(p, args.models, args.peers)
    check_out(p, args.out, args.force)
    require(*args.peers)
    return args


def run_one(model: str, library: str, spec: Spec, data, args, seed: int) -> dict:
    torch.manual_seed(seed)
    m = build(model, library, spec).to(args.device)
    train, test = data.train.to(args.device), data.test.to(args.device)
    info = fit(m, train, args.steps, args.batch_size, args.lr, seed=seed, clip=args.clip, warmup=args.warmup)
    log_q = mean_log_prob(m, test)
    log_p = float(data.log_prob(data.test.double()).mean())
    return {"nll": -log_q, "entropy": -log_p, "kl": log_p - log_q, "train_s": info["train_s"], "params": parameters(m)}


def summary_row(name: str, model: str, library: str, runs: list[dict], ours: float) -> dict:
    """One library's row over the seeds: test NLL, H(p) and KL gap are means over the same (finite) runs.

    Each seed draws its own test split, so H(p) is averaged over exactly the seeds whose NLL is
    averaged: the row then satisfies ``test NLL - H(p) = KL gap``.
    """
    finite = [r for r in runs if math.isfinite(r["kl"])]
    kl = _mean([r["kl"] for r in finite])
    return {
        "data": name,
        "model": model,
        "library": library,
        "parameters": runs[0]["params"],
        "test NLL (nats)": _mean([r["nll"] for r in finite]),
        "H(p) (nats)": _mean([r["entropy"] for r in finite]),
        "KL gap (nats)": kl,
        "KL gap sd": statistics.stdev(r["kl"] for r in finite) if len(finite) > 1 else "",
        "KL gap per seed": " / ".join(f"{r['kl']:.3f}" for r in runs),
        "gap / invertible": kl / ours,
        "diverged (NaN)": f"{len(runs) - len(finite)} of {len(runs)}",
    }


def main(argv: list[str]) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    spec = Spec(features=2, layers=args.layers, hidden=args.hidden)
    rows = []
    for name in args.data:
        for model in args.models:
            libraries = ["invertible", *[p for p in args.peers if p in MODELS[model]]]
            results: dict[str, list[dict]] = {lib: [] for lib in libraries}
            for seed in args.seeds:
                data = load(name, seed=seed, n_train=args.n_train)
                for lib in libraries:
                    r = run_one(model, lib, spec, data, args, seed)
                    print(f"{name} {model} {lib} seed {seed}: KL gap {r['kl']:.4f} nats ({r['train_s']:.0f} s)", flush=True)
                    results[lib].append(r)
            ours = summary_row(name, model, "invertible", results["invertible"], math.nan)["KL gap (nats)"]
            rows += [summary_row(name, model, lib, rs, ours) for lib, rs in results.items()]
            n_test = len(data.test)
    budget = (
        f"Architecture: {spec.describe()}. Budget: {args.steps} steps of batch {args.batch_size}, Adam lr {args.lr}, "
        f"{args.warmup} warm-up steps then cosine decay to 0, gradient norm clipped at {args.clip}, "
        "identical batches for every library (the defaults match `invertible train`); "
        f"{args.n_train} training samples; seeds {args.seeds}; device {args.device}. "
        f"KL gap = mean over the {n_test} test samples (each seed draws its own) of log p(x) - log q(x) (nats; 0 is perfect). "
        "gap / invertible above 1 means the peer is worse. Test NLL, H(p), KL gap and sd are means over the seeds "
        "whose training did not diverge (so test NLL - H(p) = KL gap); "
        "KL gap per seed lists every seed in order (nan: diverged).\n\n"
    )
    write(args.out, header("Quality: KL gap at equal architecture and budget") + budget + table(rows))
    return 0
