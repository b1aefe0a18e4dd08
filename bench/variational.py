"""Variational benchmarks: reverse-KL fits of U1-U4 and VAEs with flow posteriors on binarized MNIST-5k.

``python -m bench variational energies [--steps 10000 --batch 256 --lr 1e-3 --anneal 0 --targets u1,u2,u3,u4 --seeds 0]``
trains every model of ``--models`` on each target (and with each seed) with the same loop
(:func:`invertible.variational.fit`) and writes ``bench/results/variational_energies.md``
(updated after each run; with several seeds the KL table shows the mean and each seed's value).
``KL = log Z - ELBO`` with ``log Z`` by quadrature and the ELBO from 100,000 samples.

``python -m bench variational vae [--steps ...]`` trains the VAE of
:mod:`invertible.variational.vae` with each posterior and writes
``bench/results/variational_vae.md`` with the test ELBO and the importance-weighted
``log p(x)`` (k = 500).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch
from torch import Tensor, nn

from bench.common import add_out, check_out, csv_list, header, positive, positive_float, require, table, write
from invertible.commands._common import plain_text
from invertible.variational import FAMILIES, approximation, fit, get_target


class _Normflows(nn.Module):
    """normflows' planar flow (DiagGaussian base, K ``nf.flows.Planar`` layers) behind ``rsample_and_log_prob``."""

    def __init__(self, layers: int):
        super().__init__()
        import normflows as nf

        self.model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(2), flows=[nf.flows.Planar((2,)) for _ in range(layers)])

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        return self.model.sample(n)


class _Zuko(nn.Module):
    """zuko's neural spline flow (autoregressive, 3 transforms, 2x64 hidden) behind ``rsample_and_log_prob``."""

    def __init__(self):
        super().__init__()
        import zuko

        self.flow = zuko.flows.NSF(2, transforms=3, hidden_features=(64, 64))

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        return self.flow().rsample_and_log_prob((n,))


def _model(spec: str) -> tuple[str, nn.Module]:
    kind, _, k = spec.partition("-")
    layers = int(k) if k else 0
    if kind == "normflows":
        return f"normflows planar K={layers}", _Normflows(layers)
    if kind == "zuko_nsf":
        return "zuko NSF (autoregressive, 3 x [64, 64])", _Zuko()
    if kind in ("nsf", "iaf"):
        # nsf: autoregressive RQ splines on [-5, 5] like zuko's, sampling (what VI needs) in D = 2 MADE passes a
        # layer; iaf: the fast direction for VI, one MADE pass a layer to sample and score
        flow = approximation(kind, layers or None)
        label = "NSF (autoregressive, {} x [64, 64], reference)" if kind == "nsf" else "IAF ({} x [64, 64])"
        return "invertible " + label.format(layers or FAMILIES[kind]), flow
    return f"invertible {kind} K={layers}", approximation(kind, layers)


def _run(target: str, spec: str, seed: int, a: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    name, q = _model(spec)
    t0 = time.perf_counter()
    try:
        r = fit(q, get_target(target), steps=a.steps, batch_size=a.batch, lr=a.lr, anneal_steps=a.anneal, eval_samples=a.eval)
    except FloatingPointError as e:
        return {"target": target, "model": name, "seed": seed, "KL": f"diverged ({e})", "train s": time.perf_counter() - t0}
    return {"target": target, "model": name, "seed": seed, "KL": r.kl, "ELBO": r.elbo, "log Z (IS)": r.log_z_is,
            "log Z (true)": r.log_z_true, "ESS": r.ess, "train s": r.wall_time_s}


def _kl_cell(rows: list[dict]) -> str:
    """One model's KL on one target: the value, or over several seeds the mean and each seed's value."""
    kls = [r["KL"] for r in rows]
    if len(kls) == 1:
        return f"{kls[0]:.4g}" if isinstance(kls[0], float) else str(kls[0])
    each = " / ".join(f"{k:.3f}" if isinstance(k, float) else "diverged" for k in kls)
    finite = [k for k in kls if isinstance(k, float)]
    mean = f"{sum(finite) / len(finite):.3f}" if len(finite) == len(kls) else "diverged"
    return f"{mean} ({each})"


def energies(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench variational energies")
    p.add_argument("--steps", type=positive, default=10_000, help="Adam steps of every fit (default: %(default)s)")
    p.add_argument("--batch", type=positive, default=256, help="samples of q per step (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate of Adam (default: %(default)s)")
    p.add_argument("--anneal", type=int, default=0, help="annealing steps (0: none)")
    p.add_argument("--targets", type=csv_list, default=["u1", "u2", "u3", "u4"], help="comma-separated targets (default: u1,u2,u3,u4)")
    p.add_argument(
        "--models", type=csv_list,
        default=["planar-2", "planar-8", "planar-32", "normflows-32", "radial-32", "sylvester-16", "nsf", "iaf"],
        help="comma-separated: planar-K, radial-K, sylvester-K, normflows-K, nsf[-layers], iaf[-layers], zuko_nsf",
    )
    p.add_argument("--eval", type=positive, default=100_000, help="samples of q for the final ELBO, importance-sampled log Z and ESS (default: %(default)s)")
    p.add_argument("--seeds", type=csv_list, default=["0"], help="comma-separated seeds; every (target, model) runs once per seed")
    p.add_argument("--jobs", type=positive, default=1, help="worker processes (one thread each)")
    add_out(p, "variational_energies", "--name")
    a = p.parse_args(argv)
    targets, specs = a.targets, a.models
    try:
        seeds = [int(x) for x in a.seeds]
    except ValueError:
        p.error(f"--seeds takes comma-separated integers, got {','.join(a.seeds)!r}")
    if a.anneal < 0:
        p.error(f"--anneal must be >= 0, got {a.anneal}")
    check_out(p, a.name, a.force, "--name")
    peers = {"normflows": "normflows", "zuko_nsf": "zuko"}
    require(*[peers[kind] for kind in (spec.partition("-")[0] for spec in specs) if kind in peers])
    for target in targets:
        try:
            get_target(target)
        except ValueError as e:
            p.error(f"--targets: {e}")
    for spec in specs:
        try:
            _model(spec)
        except ValueError as e:
            p.error(f"--models: {spec!r}: {e}")
    torch.set_num_threads(1)  # as every worker (_run); header() records it
    top = header("Reverse-KL fits of U1-U4 (Rezende & Mohamed 2015, Table 1)", ("invertible", "torch", "normflows", "zuko"))
    top += (
        f"Budget: {a.steps} Adam steps of {a.batch} samples, lr {a.lr}, annealing {a.anneal or 'off'}, seeds {','.join(a.seeds)}; "
        f"every model trained by the same loop (`invertible.variational.fit`) in this run ({a.jobs} worker process(es), 1 thread each). "
        f"KL(q||p) = log Z - ELBO in nats, log Z by quadrature, ELBO from {a.eval} samples. "
        "Planar/radial/Sylvester (this library) and normflows' planar use a learnable diagonal Gaussian base. "
        "The strong reference is this library's autoregressive NSF (fixed standard normal base).\n\n"
    )
    if a.steps != 10_000:
        top += f"**Reduced budget: {a.steps} steps instead of the reference protocol's 10,000** (the run shares 2 CPU cores).\n\n"
    cells = [(t, s, seed) for seed in seeds for t in targets for s in specs]
    order = {c: i for i, c in enumerate(cells)}
    done: dict[tuple[str, str, int], dict] = {}
    with ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {pool.submit(_run, t, s, seed, a): (t, s, seed) for t, s, seed in cells}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            rows = [done[k] for k in sorted(done, key=order.get)]
            by_cell: dict[tuple[str, str], list[dict]] = {}
            for row in rows:
                by_cell.setdefault((row["model"], row["target"].upper()), []).append(row)
            pivot: dict[str, dict] = {}
            for (model, target), group in by_cell.items():
                pivot.setdefault(model, {"model": model})[target] = _kl_cell(group)
            kl_title = "## KL(q||p) in nats (lower is better)" + (": mean over seeds (each seed)" if len(seeds) > 1 else "")
            text = top + kl_title + "\n\n" + table(list(pivot.values()), ["model", *[t.upper() for t in targets]])
            text += "\n## All diagnostics\n\n" + table(rows)
            write(a.name, text)
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: python -m bench variational {energies,vae} [options]"
    if argv and argv[0] in {"-h", "--help"}:
        print(usage + "\n\n" + plain_text(__doc__))
        return 0
    if not argv or argv[0] not in {"energies", "vae"}:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "energies":
        return energies(argv[1:])
    from bench._variational_vae import vae_bench

    return vae_bench(argv[1:])
