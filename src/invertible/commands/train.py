"""``invertible train``: fit a preset to a dataset; settings from flags, a YAML/TOML file, or both."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ..persistence import report_json
from ..train import TrainConfig, TrainingInterrupted, parse_options, read_config_file, train
from ..train.checkpoint import checkpoint_settings, has_checkpoint
from ..train.config import merge_settings
from ..train.loop import check_resumable, run_directory
from ._common import add_option_flags, run_config


class _Null:
    """Marks a flag given as ``none``: it sets the setting to ``None`` (overriding a config file)."""


NULL = _Null()


def _nullable(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return NULL if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


# flag -> (TrainConfig field, type, help)
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--model": ("model", str, "preset name (see `invertible models`)"),
    "--data": ("data", str, "built-in dataset name (see `invertible datasets`), or a file or directory to read "
               "(.npy, .csv, IDX files, image folders)"),
    "--steps": ("steps", int, "optimisation steps"),
    "--batch-size": ("batch_size", int, "examples per step (over all processes)"),
    "--lr": ("lr", float, "peak learning rate of Adam"),
    "--warmup": ("warmup", int, "linear warm-up steps"),
    "--schedule": ("schedule", str, "cosine or constant"),
    "--min-lr-ratio": ("min_lr_ratio", float, "final learning rate of the cosine, as a fraction of --lr"),
    "--grad-clip": ("grad_clip", _nullable(float), "maximum gradient norm, or none"),
    "--weight-decay": ("weight_decay", float, "L2 penalty"),
    "--ema": ("ema", _nullable(float), "decay of an exponential moving average of the weights (a learned "
              "dequantizer's included), e.g. 0.999, or none; fixed for the run (--resume refuses another)"),
    "--eval-every": ("eval_every", int, "steps between validation passes"),
    "--eval-batch-size": ("eval_batch_size", int, "batch size of validation and test"),
    "--patience": ("patience", _nullable(int), "stop after this many validations without improvement, or none; "
                   "may change on --resume (a larger one continues a run that stopped early)"),
    "--min-delta": ("min_delta", float, "smallest validation improvement that resets --patience"),
    "--log-every": ("log_every", int, "steps between metric lines"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints (0: only at the end)"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N or mps"),
    "--out": ("out", str, "run directory (default runs/MODEL-DATA)"),
    "--threads": ("threads", _nullable(int), "torch CPU threads, or none for the automatic choice"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a flow", description=__doc__.replace("``", ""))
    p.add_argument("--config", metavar="FILE", help="settings file (.yaml, .yml or .toml); flags override it")
    for flag, (dest, kind, text) in _FLAGS.items():
        p.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    add_option_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with its settings under --config and flags "
                        "(model, data, their options, batch size, seed and ema cannot change)")
    # both directions of each switch, so a flag overrides a config file or the resumed run's settings either way
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the training steps with torch.compile (the first step eager, a slow second one, "
                        "faster later ones; default off)")
    p.add_argument("--progress", dest="progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default on)")
    p.add_argument("--plots", dest="plots", action=argparse.BooleanOptionalAction, default=None,
                   help="pictures: loss.png, density.png or samples.png (default on)")
    p.set_defaults(command=run)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < the resumed run's ``config.yaml`` < ``--config FILE`` < flags."""
    from_file = read_config_file(args.config) if args.config else {}
    flags = {dest: getattr(args, dest) for dest, _, _ in _FLAGS.values() if getattr(args, dest) is not None}
    flags = {k: None if v is NULL else v for k, v in flags.items()}
    for name in ("compile", "progress", "plots"):
        if getattr(args, name) is not None:
            flags[name] = getattr(args, name)
    for key, items in (("model_options", args.model_option), ("data_options", args.data_option)):
        if items:
            flags[key] = parse_options(items)
    saved: dict[str, Any] = {}
    if args.resume:
        out = flags.get("out", from_file.get("out"))
        if out is None:
            raise ValueError("--resume needs the run directory: pass --out RUN")
        check_resumable(out)  # before the settings: a missing run has none, and "no dataset given" would say so
        saved = run_config(Path(out)) or checkpoint_settings(out)  # config.yaml lost: the checkpoint records them
    return TrainConfig.from_dict(merge_settings(saved, from_file, flags), source=args.config or "settings")


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    try:
        summary = train(config, resume=args.resume)
    except TrainingInterrupted:
        raise  # its checkpoint holds the step it stopped at
    except KeyboardInterrupt:  # Ctrl-C outside the steps (loading, building), or twice
        if has_checkpoint(run_directory(config)):
            raise KeyboardInterrupt("continue the run with --resume") from None
        raise KeyboardInterrupt("no checkpoint was written: start the run again") from None
    if int(os.environ.get("RANK", "0")) == 0:
        keys = [k for k in ("test_nll", "kl_gap", "test_bpd", "steps", "wall_time_s", "parameters") if k in summary]
        print(report_json({k: summary[k] for k in keys}))
        print(f"run written to {run_directory(config)}", file=sys.stderr)
    return 0
