"""Glow on scikit-learn's digits against normflows' Glow and zuko's NSF; training-step speed.

``python -m bench glow --part quality`` trains, one process per model (``--jobs`` of them at
once; ``--jobs 1`` runs them one after another) and on identical batches (same data order,
same dequantization noise, same logit preprocessing),
this project's Glow, normflows' Glow of the same levels/steps/width, and zuko's
NSF on the flattened pixels, then reports test bits/dim (averaged over
``--eval-draws`` dequantization draws). ``--part speed`` times one training
step (forward, backward, Adam) of both Glows at batch 128 on 2 threads.

Every model is trained with the same optimiser recipe. The default is the recipe of
``invertible train`` (its ``TrainConfig`` defaults): Adam, cosine decay of the
learning rate from ``--lr`` to 0 over the step budget (Loshchilov & Hutter, SGDR,
ICLR 2017; :func:`invertible.train.schedule.lr_factor`), global gradient norm
clipped at 5. ``--schedule constant --clip 100`` gives the earlier protocol
(``bench/results/glow_digits_rerun.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import add_out, check_out, header, positive, positive_float, require, round_order, rounds_ms, table, write
from invertible.commands._common import plain_text
from invertible.data import load
from invertible.metrics import bits_per_dim
from invertible.models import Glow
from invertible.train.schedule import lr_factor


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


MODELS = {
    "glow": "invertible Glow",
    "glow_softclamp": "invertible Glow, scale=softclamp",
    "normflows": "normflows Glow",
    "nsf": "zuko NSF (flattened)",
}


def build_model(key: str, args):
    """One of :data:`MODELS` and its ``log q(y)`` function, seeded by ``args.seed``."""
    torch.manual_seed(args.seed)
    if key.startswith("glow"):
        scale = "softclamp" if key == "glow_softclamp" else "sigmoid"
        m = Glow((1, 8, 8), levels=args.levels, steps=args.steps, hidden=args.hidden, scale=scale, **glow_options(args))
        m.validate = False
        return m, m.log_prob
    if key == "normflows":
        m = normflows_glow(args.levels, args.steps, args.hidden)
        return m, lambda y: m.log_prob(y, None)
    m = zuko_nsf(64)
    return m, lambda y: m().log_prob(y.flatten(1))


def glow_options(args) -> dict:
    """The ``--glow-option KEY=VALUE`` pairs as keyword arguments of our Glow (values read as JSON, else strings)."""
    options = {}
    for item in args.glow_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--glow-option takes KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def train_one(key: str, args) -> dict:
    """Train one model on the 1,497 training digits; the batch order and dequantization noise
    depend only on the seed and the step, so every model sees identical batches."""
    torch.set_num_threads(args.threads)
    data = load("digits", seed=0, alpha=args.alpha, raw=True)
    train = torch.cat([data.train, data.val])  # the 1,497 training images
    pre = data.preprocess
    model, log_q = build_model(key, args)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps_budget, 0, args.schedule))
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for step in range(args.steps_budget):
        idx = torch.randint(0, len(train), (args.batch,), generator=g)
        torch.manual_seed(args.seed * 1_000_003 + step)
        with torch.no_grad():
            y, ladj = pre(train[idx])
        loss = -(log_q(y) + ladj).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == args.steps_budget - 1:
            print(f"{key} step {step}: batch bits/dim {loss.item() / (64 * math.log(2)):.3f}", flush=True)
    model.eval()
    torch.manual_seed(args.seed + 1)
    with torch.no_grad():
        draws = []
        for _ in range(args.eval_draws):
            y, ladj = pre(data.test)
            draws.append(bits_per_dim(log_q(y) + ladj, (1, 8, 8)).mean())
        y, ladj = pre(train)
        train_bpd = bits_per_dim(log_q(y) + ladj, (1, 8, 8)).mean()
    return {
        "model": MODELS[key],
        "test bits/dim": torch.stack(draws).mean().item(),
        "train bits/dim": train_bpd.item(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train s (shared CPU)": time.perf_counter() - t0,
    }


def quality(args, argv: list[str]) -> str:
    """Train the models in separate processes (identical batches), ``--jobs`` at a time, then tabulate."""
    with tempfile.TemporaryDirectory() as tmp:
        pending = [(key, os.path.join(tmp, f"{key}.json")) for key in MODELS]
        running: list[tuple[str, str, subprocess.Popen]] = []
        rows = []
        while pending or running:
            while pending and len(running) < args.jobs:
                key, out = pending.pop(0)
                cmd = [sys.executable, "-m", "bench", "glow", *argv, "--part", "one", "--model", key, "--json", out]
                running.append((key, out, subprocess.Popen(cmd)))
            key, out, proc = running.pop(0)
            if proc.wait() != 0:
                for _, _, other in running:  # no training run outlives the failed benchmark
                    other.kill()
                    other.wait()
                raise SystemExit(f"the training run of {key!r} failed (exit status {proc.returncode}; its error is "
                                 f"printed above), the other runs were stopped: {shlex.join(proc.args)}")
            rows.append(json.loads(Path(out).read_text()))
    ref = next(r["test bits/dim"] for r in rows if r["model"] == MODELS["normflows"])
    torch.set_num_threads(args.threads)  # header() records the threads of the training processes
    for r in rows:
        r["vs normflows"] = f"{r['test bits/dim'] - ref:+.3f}"
    text = header("Glow on digits: test bits/dim")
    text += (
        f"digits (scikit-learn, 17 levels, 1x8x8): 1,497 train / 300 test (seed 0); {args.steps_budget} steps of batch "
        f"{args.batch}, Adam lr {args.lr} ({schedule_text(args)}), gradient norm clipped at {args.clip:g}, uniform dequantization + logit (alpha "
        f"{args.alpha}); training seed {args.seed}; every model sees the same batches and the same noise (one process each). "
        f"Glow: {args.levels} levels, {args.steps} steps, {args.hidden} hidden channels, affine coupling with Glow's "
        f"sigmoid scale (the default) or the soft-clamped exponential scale{options_text(args)}; NSF: 5 transforms, 2x256 "
        f"hidden. Test bits/dim averaged over {args.eval_draws} dequantization draws (an upper bound on the true "
        f"bits/dim); train bits/dim over the 1,497 training images, one draw. Training seconds were measured on a shared machine and are not a speed comparison (see glow_speed.md).\n\n"
    )
    return text + table(rows)


def options_text(args) -> str:
    """Our Glow's extra options in words, for the results header."""
    options = glow_options(args)
    if not options:
        return ", preset defaults otherwise"
    return ", and " + ", ".join(f"{k}={v}" for k, v in options.items())


def schedule_text(args) -> str:
    """The learning-rate schedule in words, for the results header."""
    if args.schedule == "constant":
        return "constant"
    return f"cosine decay to 0 over the {args.steps_budget} steps, as `invertible train`"


def speed(args) -> str:
    """Median time of a training step of each Glow, both timed in every round (same load for both)."""
    torch.set_num_threads(args.speed_threads)
    data = load("digits", seed=0, alpha=args.alpha, raw=True)
    torch.manual_seed(args.seed)
    y, _ = data.preprocess(data.train[: args.batch])
    steps = {}
    for key in ("glow", "normflows"):
        m, lp = build_model(key, args)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)

        def step(m=m, lp=lp, opt=opt) -> None:
            loss = -lp(y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[key] = step
    times = rounds_ms(steps, args.repeats)  # the warm-up calls also run the data-dependent initialisation
    rows = [{"model": MODELS[k], "ms/step": statistics.median(v)} for k, v in times.items()]
    base = rows[1]["ms/step"]
    for r in rows:
        r["speed-up vs normflows"] = f"{base / r['ms/step']:.2f}x"
    text = header("Glow training step: invertible vs normflows")
    text += (
        f"One training step (forward, backward, Adam) at batch {args.batch} on 1x8x8 digits, {args.levels} levels, "
        f"{args.steps} steps, {args.hidden} hidden channels, affine coupling, LU 1x1 conv; "
        f"{round_order()}; median of {args.repeats} rounds, torch threads {args.speed_threads}.\n\n"
    )
    return text + table(rows)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench glow", description=plain_text(__doc__))
    p.add_argument(
        "--part",
        choices=["quality", "speed", "one"],
        default="quality",
        help="quality: train every model, test bits/dim; speed: time one training step; one: train --model only (default: %(default)s)",
    )
    p.add_argument("--model", choices=list(MODELS), help="with --part one: the model to train")
    p.add_argument("--json", help="with --part one: where to write its result")
    p.add_argument("--threads", type=positive, default=1, help="torch threads of each training process")
    p.add_argument("--jobs", type=positive, default=len(MODELS), help="training processes run at once (1: one after another)")
    p.add_argument("--steps-budget", type=positive, default=2000, help="training steps of every model (default: %(default)s)")
    p.add_argument("--batch", type=positive, default=128, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate of Adam (default: %(default)s)")
    p.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning-rate schedule of every model (cosine: decay to 0 over the budget, as `invertible train`)",
    )
    p.add_argument("--clip", type=positive_float, default=5.0, help="global gradient-norm clip of every model (`invertible train`: 5)")
    p.add_argument("--levels", type=positive, default=2, help="Glow levels, both Glows (default: %(default)s)")
    p.add_argument("--steps", type=positive, default=8, help="flow steps per level, both Glows (default: %(default)s)")
    p.add_argument("--hidden", type=positive, default=64, help="hidden channels of the couplings (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="alpha of the logit preprocessing (default: %(default)s)")
    p.add_argument("--eval-draws", type=positive, default=10, help="dequantization draws averaged in the test bits/dim (default: %(default)s)")
    p.add_argument("--repeats", type=positive, default=30, help="timing rounds of the speed part (default: %(default)s)")
    p.add_argument("--speed-threads", type=positive, default=2, help="torch threads of the speed part")
    add_out(p, None, what=" (default glow_digits / glow_speed)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument(
        "--glow-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra option of our Glow (both rows), e.g. prior=conditional; repeatable",
    )
    args = p.parse_args(argv)
    try:
        glow_options(args)
    except ValueError as e:
        p.error(str(e))
    if args.part == "one":
        if not args.model or not args.json:
            p.error("--part one needs --model and --json")
        Path(args.json).write_text(json.dumps(train_one(args.model, args)))
        return 0
    name = args.out or ("glow_digits" if args.part == "quality" else "glow_speed")
    check_out(p, name, args.force)
    if args.part == "quality":
        require("normflows", "zuko")
        write(name, quality(args, argv))
    else:
        require("normflows")
        write(name, speed(args))
    return 0
