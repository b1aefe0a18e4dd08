"""Data-parallel training under ``torchrun``: process group set-up and the device of each process.

``torchrun --nproc_per_node N -m invertible train ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; the engine then joins a process group
(NCCL on CUDA, gloo on CPU), wraps the flow in ``DistributedDataParallel`` and
gives every process its own shard of each batch. Only rank 0 writes files.
Decisions that end the run are taken by every rank alike: early stopping by
rank 0 (:func:`broadcast_flag`), a stop signal received by any rank through
the counts that ride with each step's loss (:func:`mean_and_counts_over_ranks`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["Runtime", "setup", "teardown", "resolve_device", "parameter_digest", "gather_objects", "broadcast_flag",
           "mean_over_ranks", "mean_and_counts_over_ranks", "counts_over_ranks"]


@dataclass
class Runtime:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def check_device(name: object) -> str:
    """``name`` if it is a device the commands take (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a
    ``ValueError`` naming them (torch's own message for ``foo`` is a traceback-sized list of device types)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return name


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (one GPU per local rank), else CPU; ``cuda`` without CUDA is an error."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (this torch build: {torch.__version__})")
        if name == "cuda":  # modulo: a launcher that shows each process one GPU alone (SLURM) keeps LOCAL_RANK
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(name)


def setup(device: str) -> Runtime:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``), and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return Runtime(rank=rank, world_size=world_size, device=dev)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the bytes of every parameter and buffer: equal digests mean identical replicas."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_objects(runtime: Runtime, obj: object) -> list:
    """``obj`` from every process, in rank order (just ``[obj]`` without a process group)."""
    if not runtime.distributed:
        return [obj]
    out: list = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(runtime: Runtime, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every process (keeps decisions such as early stopping in sync)."""
    if not runtime.distributed:
        return flag
    t = torch.tensor([int(flag)], device=_flag_device(runtime))
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_over_ranks(runtime: Runtime, value: torch.Tensor) -> torch.Tensor:
    """The mean of a detached ``value`` over every process (``value`` itself without a process group)."""
    if not runtime.distributed:
        return value.detach()
    t = value.detach().clone()
    dist.all_reduce(t)
    return t / runtime.world_size


def _flag_device(runtime: Runtime) -> torch.device | str:
    """Where a collective's small tensor of flags lives: the device with NCCL, which reduces only there; else the CPU."""
    return runtime.device if dist.get_backend() == "nccl" else "cpu"


def mean_and_counts_over_ranks(runtime: Runtime, value: torch.Tensor, flags: Sequence[bool]) -> tuple[float, list[int]]:
    """The mean of a detached scalar ``value`` over every process, and for each of ``flags`` how many processes set it.

    One all-reduce of ``[value, *flags]``: a training step reduces its loss anyway, so the flags cost no further
    collective. Without a process group: ``value`` itself and the flags as 0 or 1.
    """
    if not runtime.distributed:
        return value.detach().item(), [int(f) for f in flags]
    t = torch.cat([value.detach().reshape(1), torch.tensor(flags, dtype=value.dtype).to(value.device)])
    dist.all_reduce(t)
    t[0] /= runtime.world_size  # in the value's dtype, as mean_over_ranks divides
    mean, *counts = t.tolist()  # one read back from the device
    return mean, [round(c) for c in counts]


def counts_over_ranks(runtime: Runtime, flags: Sequence[bool]) -> list[int]:
    """For each of ``flags``, how many processes set it (the flags as 0 or 1 without a process group)."""
    if not runtime.distributed:
        return [int(f) for f in flags]
    t = torch.tensor(flags, dtype=torch.int64).to(_flag_device(runtime))
    dist.all_reduce(t)
    return t.tolist()
