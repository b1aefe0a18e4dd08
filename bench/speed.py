"""Speed of identical flows in each library: a training step and sampling, as ratios to this project.

``flock /tmp/bench.lock python -m bench speed [--models realnvp] [--peers zuko,nflows,normflows]
[--features 2,16] [--batch-size 512] [--sample-size 4096] [--device cpu]``

A training step is ``loss = -log_prob(batch).mean(); loss.backward(); adam.step()``;
sampling is ``sample(n)`` without gradients. The libraries are timed in
rounds: each round times every library once, in a random order (seeded, the
same on every run), so a change of machine load hits all of them alike and no
library always runs right after the same other one; each figure is the best (minimum) over
rounds of the mean time per call within a round — on a shared machine the
least disturbed round is the best estimate of the cost itself. ``time / invertible`` above 1 means
the peer is slower.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable

import torch

from .common import add_out, check_device, check_out, csv_list, header, positive, require, round_order, rounds_ms, table, write
from ._flows import MODELS, Spec, build, check_names, parameters


def _sizes(text: str) -> list[int]:
    return [positive(v) for v in csv_list(text)]


def _even_sizes(text: str) -> list[int]:
    """Data sizes: even, as the couplings split the features in two halves of equal size."""
    sizes = _sizes(text)
    odd = [d for d in sizes if d % 2]
    if odd or not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated even sizes, got {text!r}")
    return sizes


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=csv_list, default=["realnvp"], help="comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--peers", type=csv_list, default=["zuko", "nflows", "normflows"], help="comma-separated peer libraries")
    p.add_argument("--features", type=_even_sizes, default=[2, 16], help="data sizes (even)")
    p.add_argument("--layers", type=positive, default=8, help="flow layers (default: %(default)s)")
    p.add_argument("--hidden", type=lambda s: tuple(_sizes(s)), default=(64, 64), help="comma-separated hidden sizes (default: 64,64)")
    p.add_argument("--batch-size", type=positive, default=512, help="batch of the training step (default: %(default)s)")
    p.add_argument("--sample-size", type=positive, default=4096, help="samples per sampling call (default: %(default)s)")
    p.add_argument("--rounds", type=positive, default=15, help="timing rounds; a time is the best (minimum) round")
    p.add_argument("--calls", type=positive, default=10, help="calls per library per round")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=positive, default=2, help="torch intra-op threads (default: %(default)s)")
    add_out(p, "speed")
    args = p.parse_args(argv)
    check_names(p, args.models, args.peers)
    check_device(p, args.device)
    check_out(p, args.out, args.force)
    require(*args.peers)
    return args


def best_round_ms(fns: dict[str, Callable[[], object]], rounds: int, calls: int, device: str) -> dict[str, float]:
    """Minimum over ``rounds`` of the mean milliseconds per call of each function (:func:`bench.common.rounds_ms`)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    return {k: min(v) for k, v in rounds_ms(fns, rounds, calls, sync=sync).items()}


def _train_step(model, x: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = -model.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sampler(model, n: int) -> Callable[[], None]:
    def sample() -> None:
        with torch.no_grad():
            model.sample(n)

    return sample


def main(argv: list[str]) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for model_name in args.models:
        libraries = ["invertible", *[p for p in args.peers if p in MODELS[model_name]]]
        for features in args.features:
            spec = Spec(features=features, layers=args.layers, hidden=args.hidden)
            torch.manual_seed(0)
            x = torch.randn(args.batch_size, features, device=args.device)
            models = {lib: build(model_name, lib, spec).to(args.device) for lib in libraries}
            steps = best_round_ms({k: _train_step(m, x) for k, m in models.items()}, args.rounds, args.calls, args.device)
            samples = best_round_ms({k: _sampler(m, args.sample_size) for k, m in models.items()}, args.rounds, args.calls, args.device)
            for lib in libraries:
                rows.append(
                    {
                        "model": model_name,
                        "D": features,
                        "library": lib,
                        "parameters": parameters(models[lib]),
                        "train step (ms)": steps[lib],
                        "step time / invertible": steps[lib] / steps["invertible"],
                        "sample (ms)": samples[lib],
                        "sample time / invertible": samples[lib] / samples["invertible"],
                    }
                )
                print(rows[-1], flush=True)
    notes = (
        f"Architecture: {args.layers} affine couplings with ReLU MLP conditioners of hidden widths {list(args.hidden)}, "
        f"standard normal base, identical in every library (see `bench/_flows.py`). Train step: batch {args.batch_size}, "
        f"Adam. Sampling: {args.sample_size} samples. Device {args.device}, {args.threads} torch threads; "
        f"best of {args.rounds} rounds of {args.calls} calls ({round_order('library')}). Ratios above 1: the peer is slower. "
        f"Machine load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: "
        "absolute times inflate with load, the ratios less so.\n\n"
    )
    write(args.out, header("Speed: training step and sampling at identical architecture") + notes + table(rows))
    return 0
