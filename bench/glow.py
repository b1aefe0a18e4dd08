"""Glow on scikit-learn's digits against normflows' Glow and zuko's NSF; training-step speed.

``python -m bench glow --part quality`` trains, in one process and on identical
batches (same data order, same dequantization noise, same logit preprocessing),
this project's Glow, normflows' Glow of the same levels/steps/width, and zuko's
NSF on the flattened pixels, then reports test bits/dim (averaged over
``--eval-draws`` dequantization draws). ``--part speed`` times one training
step (forward, backward, Adam) of both Glows at batch 128 on 2 threads.
"""

from __future__ import annotations

import argparse
import math

import torch

from bench.common import header, table, time_ms, write
from invertible.data import load
from invertible.metrics import bits_per_dim
from invertible.models import Glow


def normflows_glow(levels: int, steps: int, hidden: int, shape=(1, 8, 8)):
    """normflows' multi-scale Glow as in its README example (channel split, affine, LU 1x1 conv)."""
    import normflows as nf

    c = shape[0]
    q0, merges, flows = [], [], []
    for i in range(levels):
        flows_ = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True) for _ in range(steps)]
        flows_ += [nf.flows.Squeeze()]
        flows += [flows_]
        if i > 0:
            merges += [nf.flows.Merge()]
            latent = (c * 2 ** (levels - i), shape[1] // 2 ** (levels - i), shape[2] // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), shape[1] // 2**levels, shape[2] // 2**levels)
        q0 += [nf.distributions.GlowBase(latent)]
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def zuko_nsf(features: int):
    import zuko

    return zuko.flows.NSF(features, transforms=5, hidden_features=(256, 256))


def build_models(args) -> dict:
    torch.manual_seed(args.seed)
    ours = Glow((1, 8, 8), levels=args.levels, steps=args.steps, hidden=args.hidden)
    ours.validate = False
    torch.manual_seed(args.seed)
    models = {"invertible Glow": (ours, lambda y: ours.log_prob(y))}
    nf_glow = normflows_glow(args.levels, args.steps, args.hidden)
    models["normflows Glow"] = (nf_glow, lambda y: nf_glow.log_prob(y, None))
    return models


def quality(args) -> str:
    data = load("digits", seed=0, alpha=args.alpha)
    train = torch.cat([data.train, data.val])  # the 1,497 training images
    pre = data.preprocess
    models = build_models(args)
    nsf = zuko_nsf(64)
    models["zuko NSF (flattened)"] = (nsf, lambda y: nsf().log_prob(y.flatten(1)))
    opts = {k: torch.optim.Adam(m.parameters(), lr=args.lr) for k, (m, _) in models.items()}
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    for step in range(args.steps_budget):
        idx = torch.randint(0, len(train), (args.batch,), generator=g)
        with torch.no_grad():
            y, ladj = pre(train[idx])
        losses = {}
        for k, (m, lp) in models.items():
            loss = -(lp(y) + ladj).mean()
            losses[k] = loss.item() / (64 * math.log(2))
            opts[k].zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 100.0)
            opts[k].step()
        if step % 200 == 0 or step == args.steps_budget - 1:
            print(f"step {step}: batch bits/dim " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()), flush=True)
    rows = []
    torch.manual_seed(args.seed + 1)
    for k, (m, lp) in models.items():
        m.eval()
        with torch.no_grad():
            draws = []
            for _ in range(args.eval_draws):
                y, ladj = pre(data.test)
                draws.append(bits_per_dim(lp(y) + ladj, (1, 8, 8)).mean())
            bpd = torch.stack(draws).mean().item()
        rows.append(
            {
                "model": k,
                "test bits/dim": bpd,
                "parameters": sum(p.numel() for p in m.parameters()),
            }
        )
    ref = rows[1]["test bits/dim"]
    for r in rows:
        r["vs normflows"] = f"{r['test bits/dim'] - ref:+.3f}"
    text = header("Glow on digits: test bits/dim")
    text += (
        f"digits (scikit-learn, 17 levels, 1x8x8): 1,497 train / 300 test (seed 0); {args.steps_budget} steps of batch "
        f"{args.batch}, Adam lr {args.lr}, uniform dequantization + logit (alpha {args.alpha}), identical batches and "
        f"noise for all models; Glow: {args.levels} levels, {args.steps} steps, {args.hidden} hidden channels. Test "
        f"bits/dim averaged over {args.eval_draws} dequantization draws (an upper bound on the true bits/dim).\n\n"
    )
    return text + table(rows)


def speed(args) -> str:
    torch.set_num_threads(2)
    models = build_models(args)
    data = load("digits", seed=0, alpha=args.alpha)
    y, _ = data.preprocess(data.train[: args.batch])
    rows = []
    for k, (m, lp) in models.items():
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        lp(y)  # data-dependent initialisation

        def step():
            loss = -lp(y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows.append({"model": k, "ms/step": time_ms(step, repeats=args.repeats)})
    base = rows[1]["ms/step"]
    for r in rows:
        r["speed-up vs normflows"] = f"{base / r['ms/step']:.2f}x"
    text = header("Glow training step: invertible vs normflows")
    text += (
        f"One training step (forward, backward, Adam) at batch {args.batch} on 1x8x8 digits, {args.levels} levels, "
        f"{args.steps} steps, {args.hidden} hidden channels, affine coupling, LU 1x1 conv; median of {args.repeats}, "
        f"torch threads 2.\n\n"
    )
    return text + table(rows)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench glow", description=__doc__)
    p.add_argument("--part", choices=["quality", "speed"], default="quality")
    p.add_argument("--steps-budget", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--eval-draws", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.part == "quality":
        write("glow_digits", quality(args))
    else:
        write("glow_speed", speed(args))
    return 0
