"""``python -m bench maf``: MAF and NSF speed against nflows, zuko and the bare networks; MAF/NSF quality against zuko.

Speed (CPU, ``torch.set_num_threads(2)``): a training step (``log_prob`` +
backward) at batch 1024, 16 features, 5 layers of MADE 2x128, and drawing 1,024
samples from the same model. Each peer builds the same architecture: nflows
``MaskedAffineAutoregressiveTransform(num_blocks=1, use_residual_blocks=False)``
with reversal permutations, zuko ``MAF(transforms=5, hidden_features=(128, 128))``,
and the "bare networks" are five plain ``16 -> 128 -> 128 -> 32`` MLPs run
forward and backward alone. The row "chained MADEs" is the least a MAF has to
do beyond them: this library's five MADEs chained by the affine map in its
cheapest form, ``z = x exp(beta) + m`` (one fused multiply-add) with unbounded
``beta``, and the Gaussian log-density, written out with no transform
framework — unlike the bare networks, every MADE after the first must
backpropagate into its input. ``--compile`` adds this library's and zuko's MAF
with ``torch.compile(log_prob)`` (a compiled model is compared with the fastest
compiled peer). ``--decompose`` adds the MAF without its soft clamp (``scale="exp"``)
and the plain networks chained like the MADEs, which split the MAF's cost beyond
the bare networks into its parts. ``--flow nsf`` times the autoregressive
rational-quadratic spline flows instead (8 bins on ``[-5, 5]``, linear tails, the
same MADEs with ``3K - 1 = 23`` outputs per feature): this library's ``NSF``
preset, zuko ``NSF(transforms=5, hidden_features=(128, 128))`` and nflows
``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with reversal
permutations; its bare networks are five ``16 -> 128 -> 128 -> 368`` MLPs.
``--flow nsf-coupling`` times spline couplings of alternating even/odd features
(``NSF(kind="coupling")``) against nflows' ``PiecewiseRationalQuadraticCouplingTransform``
with the same masks and plain ``8 -> 128 -> 128 -> 184`` MLP conditioners (zuko has no
spline coupling flow; ``--compile`` compiles this library's and nflows').

Quality ("invertible MAF (identity start)" is the MAF with ``init="identity"``):
3,000 steps, batch 256, Adam 1e-3 with cosine decay (no warm-up;
the shared loop of ``bench/_training.py``, gradient-norm clipping at 5, the same
batches for every model), 5 layers of 2x128; KL gap ``NLL(test) - H(p)`` on checkerboard and 8gaussians (exact
log-densities) for invertible's MAF and NSF (autoregressive, 8 bins, bound 5)
and zuko's MAF and NSF (same sizes; zuko's default bins and bound are 8 and 5).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
from torch import nn

from invertible.commands._common import plain_text
from invertible.data import load

from .common import add_out, check_out, csv_list, header, positive, require, round_order, rounds_ms, table, write
from ._flows import Model
from ._training import check_exact_data, fit, mean_log_prob

FEATURES, LAYERS, HIDDEN, BATCH = 16, 5, (128, 128), 1024
#: The splines of every NSF here (zuko's defaults): bins on ``[-bound, bound]``, linear tails.
NSF_BINS, NSF_BOUND = 8, 5.0


# ----------------------------------------------------------------------------- models
def ours(preset: str, features: int, hidden=HIDDEN, layers=LAYERS, **options):
    from invertible.models import build

    if preset == "maf":
        flow = build("maf", features=features, layers=layers, hidden=list(hidden), **options)
    else:
        flow = build("nsf", features=features, layers=layers, hidden=list(hidden), bins=NSF_BINS, bound=NSF_BOUND,
                     **options)
    flow.validate = False  # the peers do not check their inputs either
    return Model(flow, flow.log_prob, flow.sample)


def zuko_flow(kind: str, features: int, hidden=HIDDEN, layers=LAYERS):
    import zuko

    cls = zuko.flows.MAF if kind == "maf" else zuko.flows.NSF
    flow = cls(features, transforms=layers, hidden_features=tuple(hidden))
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def nflows_maf(features: int, hidden=HIDDEN, layers=LAYERS):
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, MaskedAffineAutoregressiveTransform, ReversePermutation

    ts = []
    for _ in range(layers):
        ts += [
            MaskedAffineAutoregressiveTransform(features, hidden[0], num_blocks=len(hidden) - 1, use_residual_blocks=False),
            ReversePermutation(features),
        ]
    flow = Flow(CompositeTransform(ts), StandardNormal([features]))
    return Model(flow, flow.log_prob, flow.sample)


def nflows_coupling_nsf(features: int, hidden=HIDDEN, layers=LAYERS, bins: int = NSF_BINS, bound: float = NSF_BOUND):
    """nflows' rational-quadratic spline couplings, linear tails, alternating even/odd features (as this library's
    ``NSF(kind="coupling")``), each conditioner a plain MLP of ``hidden``."""
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, PiecewiseRationalQuadraticCouplingTransform

    from ._flows import _PlainMLP

    parity = torch.arange(features) % 2  # nflows: mask > 0 marks the transformed features
    ts = [PiecewiseRationalQuadraticCouplingTransform(parity if i % 2 == 0 else 1 - parity,
                                                      lambda a, b: _PlainMLP(a, b, tuple(hidden)), num_bins=bins,
                                                      tails="linear", tail_bound=bound)
          for i in range(layers)]
    flow = Flow(CompositeTransform(ts), StandardNormal([features]))
    return Model(flow, flow.log_prob, flow.sample)


def nflows_nsf(features: int, hidden=HIDDEN, layers=LAYERS, bins: int = NSF_BINS, bound: float = NSF_BOUND):
    """nflows' autoregressive rational-quadratic spline flow, linear tails, with reversal permutations."""
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (CompositeTransform, MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
                                   ReversePermutation)

    ts = []
    for _ in range(layers):
        ts += [
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                features, hidden[0], num_bins=bins, tails="linear", tail_bound=bound, num_blocks=len(hidden) - 1,
                use_residual_blocks=False),
            ReversePermutation(features),
        ]
    flow = Flow(CompositeTransform(ts), StandardNormal([features]))
    return Model(flow, flow.log_prob, flow.sample)


def bare_networks(features: int, hidden=HIDDEN, layers=LAYERS, per_dim: int = 2) -> nn.ModuleList:
    """``layers`` plain MLPs ``features -> hidden -> per_dim * features``: a MADE's arithmetic without masks."""

    def mlp() -> nn.Sequential:
        sizes = [features, *hidden]
        mods: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*mods, nn.Linear(sizes[-1], per_dim * features))

    return nn.ModuleList(mlp() for _ in range(layers))


# ----------------------------------------------------------------------------- speed
def _perturb(module: nn.Module) -> None:
    """Move zero-initialised output layers off zero so every model does real work when sampling."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))


def paired_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``time(a) / time(b)`` within the round: a load change between rounds hits both alike."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def chained_step(nets: list[nn.Module], owner: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A training step of ``nets`` (each ``D -> 2D``) chained by ``z = x exp(beta) + m``, nothing else."""

    def step() -> None:
        owner.zero_grad(set_to_none=True)
        z, ladj = x, 0.0
        for net in nets:
            beta, m = net(z).view(z.shape[0], 2, -1).unbind(1)
            z = torch.addcmul(m, z, torch.exp(beta))
            ladj = ladj + beta.sum(1)
        (-(ladj - 0.5 * z.square().sum(1)).mean()).backward()

    return step


def chained_mades_step(flow: Model, x: torch.Tensor) -> Callable[[], None]:
    """A training step of the MADEs of ``flow`` chained by ``z = x exp(beta) + m``, nothing else."""
    return chained_step([layer.net for layer in flow.net.transform], flow.net, x)


COMPILED = " (torch.compile)"
#: The rows of other libraries (the fastest of them is the reference of the ratios).
PEERS = tuple(f"{lib} {kind}{mode}" for kind in ("MAF", "NSF", "NSF (coupling)") for lib in ("zuko", "nflows")
              for mode in ("", COMPILED))


def flow_models(flow: str) -> dict[str, Callable[[], Model]]:
    """The rows of ``--flow``, this library's first and then its peers: name -> builder."""
    if flow == "nsf-coupling":  # zuko has no spline coupling flow
        return {"invertible NSF (coupling)": lambda: ours("nsf", FEATURES, kind="coupling"),
                "nflows NSF (coupling)": lambda: nflows_coupling_nsf(FEATURES)}
    title = flow.upper()
    return {f"invertible {title}": lambda: ours(flow, FEATURES), f"zuko {title}": lambda: zuko_flow(flow, FEATURES),
            f"nflows {title}": lambda: nflows_maf(FEATURES) if flow == "maf" else nflows_nsf(FEATURES)}
#: ``--decompose``'s row of the plain networks chained like the MADEs (not autoregressive: a cost reference only).
UNMASKED = "bare networks chained (no masks)"


def _compiled(model: Model) -> Model:
    """The same model with its ``log_prob`` compiled by ``torch.compile`` (default mode)."""
    return Model(model.net, torch.compile(model.log_prob), model.sample)


def speed(repeats: int, compile_: bool = False, decompose: bool = False, flow: str = "maf") -> str:
    """The speed table of ``flow`` (``"maf"`` or ``"nsf"``, see the module docstring)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(BATCH, FEATURES)
    chained = ours("maf", FEATURES) if flow == "maf" else None
    builders = flow_models(flow)
    entries = {name: build() for name, build in builders.items()}
    compiled = {}
    if compile_:  # this library's and the first peer's (zuko's where it has the flow)
        compiled = {name + COMPILED: builders[name]() for name in list(builders)[:2]}
    if decompose:
        entries["invertible MAF (scale=exp)"] = ours("maf", FEATURES, scale="exp")
    if flow == "nsf-coupling":  # each conditioner reads half the features and gives the spline of the other half
        half = FEATURES // 2
        nets, bare_x = bare_networks(half, per_dim=3 * NSF_BINS - 1), x[:, :half].contiguous()
    else:
        nets, bare_x = bare_networks(FEATURES, per_dim=2 if flow == "maf" else 3 * NSF_BINS - 1), x

    def bare_step() -> None:
        nets.zero_grad(set_to_none=True)
        sum(net(bare_x).sum() for net in nets).backward()

    def train_step(model: Model) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            (-model.log_prob(x).mean()).backward()

        return step

    def sample_step(model: Model) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                model.sample(1024)

        return step

    for model in (*entries.values(), *compiled.values(), *([chained] if chained else [])):
        _perturb(model)
    reference = {"bare networks": bare_step}
    if chained:  # the least a MAF computes beyond its networks
        reference["chained MADEs"] = chained_mades_step(chained, x)
    compiled = {k: _compiled(m) for k, m in compiled.items()}
    if decompose:  # the same chain on the plain networks: what the MADEs' masks cost
        unmasked = bare_networks(FEATURES)
        reference[UNMASKED] = chained_step(list(unmasked), unmasked, x)
    train = rounds_ms({**reference, **{k: train_step(m) for k, m in {**entries, **compiled}.items()}}, repeats)
    sample_rounds = max(repeats // 2, 5)
    sample = rounds_ms({k: sample_step(m) for k, m in entries.items()}, sample_rounds)

    def fastest_peer(times: dict[str, list[float]], names) -> str:
        return min((n for n in names if n in PEERS), key=lambda n: statistics.median(times[n]))

    peer_train = fastest_peer(train, entries)
    peer_compiled = fastest_peer(train, compiled) if compiled else None
    peer_sample = fastest_peer(sample, entries)
    rows = []
    for name in train:
        rows.append({
            "model": name,
            "train step ms": statistics.median(train[name]),
            "x bare networks": paired_ratio(train, name, "bare networks"),
            "fastest peer / this": paired_ratio(train, peer_compiled if name in compiled else peer_train, name),
            "sample 1024 ms": statistics.median(sample[name]) if name in sample else "-",
            "fastest peer / this (sampling)": paired_ratio(sample, peer_sample, name) if name in sample else "-",
        })
    return (
        f"## Speed: batch {BATCH}, {FEATURES} features, {LAYERS} layers, MADE {HIDDEN[0]}x{len(HIDDEN)}, "
        + (f"{NSF_BINS} spline bins on [-{NSF_BOUND:g}, {NSF_BOUND:g}], " if flow != "maf" else "")
        + ("spline couplings of alternating features (MLP 128x2 conditioners), " if flow == "nsf-coupling" else "") +
        f"CPU, {torch.get_num_threads()} threads ({repeats} rounds of training steps, {sample_rounds} of sampling, "
        f"{round_order()}; times are "
        "medians over the rounds, ratios medians of the per-round ratios)\n\n" + table(rows)
        + ("\nRows marked (torch.compile) run `torch.compile(log_prob)` (compiled before timing) and are "
           "compared with the fastest compiled peer; the others with the fastest eager peer.\n" if compiled else "")
        + (f"\n`--decompose` rows: the MAF with the unbounded log-scale (`scale=\"exp\"`: no soft clamp, only "
           "a clamp to the float range of exp), and "
           f"\"{UNMASKED}\": the plain networks chained by the chained MADEs' affine map (not an autoregressive "
           "model; the difference to \"chained MADEs\" is what the masks cost).\n" if decompose else "")
    )


# ----------------------------------------------------------------------------- quality
QUALITY_MODELS = {
    "invertible MAF": lambda: ours("maf", 2),
    "invertible MAF (identity start)": lambda: ours("maf", 2, init="identity"),
    "zuko MAF": lambda: zuko_flow("maf", 2),
    "invertible NSF": lambda: ours("nsf", 2),
    "zuko NSF": lambda: zuko_flow("nsf", 2),
}


def quality(steps: int, batch: int, datasets: list[str], models: list[str], seeds: list[int]) -> str:
    unknown = sorted(set(models) - set(QUALITY_MODELS))
    if unknown:
        raise ValueError(f"unknown quality models {unknown}; choose from {sorted(QUALITY_MODELS)}")
    rows, gaps = [], {}
    for ds in datasets:
        for seed in seeds:
            data = load(ds, seed=seed)
            entropy = -data.log_prob(data.test).mean().item()
            for name in models:
                torch.manual_seed(seed)
                model = QUALITY_MODELS[name]()
                fit(model, data.train, steps, batch_size=batch, lr=1e-3, seed=seed, warmup=0)
                nll = -mean_log_prob(model, data.test)
                rows.append({"dataset": ds, "seed": seed, "model": name, "test NLL": nll, "H(p)": entropy,
                             "KL gap (nats)": nll - entropy})
                gaps.setdefault((ds, name), []).append(nll - entropy)
                print(rows[-1], flush=True)
    summary = [
        {"dataset": ds, "model": name, "seeds": len(v), "mean KL gap": statistics.mean(v),
         "std": statistics.stdev(v) if len(v) > 1 else "-"}
        for (ds, name), v in gaps.items()
    ]
    return (
        f"## Quality: {steps} steps, batch {batch}, Adam 1e-3 cosine, {LAYERS} layers of {HIDDEN[0]}x{len(HIDDEN)}, "
        f"seeds {', '.join(map(str, seeds))}; KL gap = NLL(test) - H(p) on {len(data.test)} test points\n\n"
        + table(summary) + "\n### Every run\n\n" + table(rows)
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench maf", description=plain_text(__doc__.split("\n\n")[0]))
    p.add_argument("part", choices=["speed", "quality"], help="which half to run")
    p.add_argument("--repeats", type=positive, default=30,
                   help="timing rounds of the training step (speed; sampling runs half as many, at least 5)")
    p.add_argument("--flow", choices=["maf", "nsf", "nsf-coupling"], default="maf",
                   help="the flow to time (speed): the affine MAF, the autoregressive rational-quadratic NSF, or the "
                        "NSF of spline couplings (against nflows: zuko has none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd flows of this library and zuko (speed)")
    p.add_argument("--decompose", action="store_true",
                   help="also time the MAF without its soft clamp and the networks chained without masks (speed)")
    p.add_argument("--steps", type=positive, default=3000, help="training steps (quality)")
    p.add_argument("--batch-size", type=positive, default=256, help="batch size (quality)")
    p.add_argument("--datasets", type=csv_list, default=["checkerboard", "8gaussians"], help="comma-separated 2-D datasets (quality)")
    p.add_argument("--models", type=csv_list, default=list(QUALITY_MODELS),
                   help="comma-separated models (quality), from: " + ", ".join(QUALITY_MODELS))
    p.add_argument("--threads", type=positive, default=2, help="torch threads (quality; speed always uses 2)")
    add_out(p, None, "--name", " (default maf_speed / maf_quality)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of data, weights and batches (quality)")
    args = p.parse_args(argv)
    models = args.models
    unknown = [m for m in models if m not in QUALITY_MODELS]
    if args.part == "quality" and unknown:
        p.error(f"--models: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(QUALITY_MODELS)}")
    if args.part == "quality":
        check_exact_data(p, args.datasets, "--datasets")
    if args.decompose and args.flow != "maf":
        p.error(f"--decompose splits the MAF's cost; it does not apply to --flow {args.flow}")
    name = args.name or (f"{args.flow.replace('-', '_')}_speed" if args.part == "speed" and args.flow != "maf"
                         else f"maf_{args.part}")
    check_out(p, name, args.force, "--name")
    require(*(["zuko", "nflows"] if args.part == "speed" else [m.split()[0] for m in models if not m.startswith("invertible")]))
    torch.set_num_threads(2 if args.part == "speed" else args.threads)  # before header(), which records it
    if args.part == "speed":
        title = {"nsf-coupling": "NSF (coupling)"}.get(args.flow, args.flow.upper())
        peers = "nflows" if args.flow == "nsf-coupling" else "zuko, nflows"
        text = header(f"{title} speed: invertible vs {peers} and the bare networks") + speed(
            args.repeats, args.compile, args.decompose, args.flow)
    else:
        text = header("MAF/NSF quality: KL gap against zuko") + quality(
            args.steps, args.batch_size, args.datasets, models, args.seeds
        )
    write(name, text)
    return 0
