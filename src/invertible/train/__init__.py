"""Training: configuration, the loop, checkpoints, distributed data parallelism, evaluation."""

from .build import build_flow, load_bundle
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, parse_options, read_config_file
from .evaluate import evaluate_split
from .interrupt import TrainingInterrupted
from .loop import TrainingError, train

__all__ = [
    "TrainConfig",
    "read_config_file",
    "parse_options",
    "train",
    "TrainingError",
    "TrainingInterrupted",
    "load_bundle",
    "build_flow",
    "evaluate_split",
    "load_checkpoint",
    "save_checkpoint",
]
