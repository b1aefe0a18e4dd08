"""Normalisation layers that are bijections: ActNorm and batch normalisation."""

from __future__ import annotations

import math
import numbers

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core import Transform
from .shapes import check_channels
from .stable import exp_bound, log_add

__all__ = ["ActNorm", "BatchNorm", "synchronize_normalization"]


def _unit(peak: Tensor) -> Tensor:
    """Per channel, the power of two ``2^(e - 1)`` with ``peak = m 2^e``, ``m`` in ``[1/2, 1)``
    (``2^(e - 1)``, not ``2^e``, stays finite at the largest float); 1 for a channel without values.
    Dividing by it is exact (up to underflow below the smallest normal float) and leaves ``|x| < 2``."""
    exponent = torch.frexp(torch.where(torch.isfinite(peak), peak, 1.0)).exponent
    low = math.frexp(torch.finfo(peak.dtype).tiny)[1] - 1  # 2^low is the smallest normal float
    return torch.ldexp(torch.ones_like(peak), (exponent - 1).clamp_min(low))


def _peak(x: Tensor, dims: list[int]) -> Tensor:
    """``max |x|`` per channel (over ``dims``), from the largest and smallest values (no ``|x|`` copy)."""
    return torch.maximum(x.amax(dim=dims), -x.amin(dim=dims))


class _AllReduce(torch.autograd.Function):
    """The sum of a tensor over every rank; the gradient of each rank's copy is the sum of the gradients of all
    ranks' results (``torch.distributed.nn.functional.all_reduce``, which is deprecated)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: D102
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return _AllReduce.apply(grad)


def _all_reduce(t: Tensor) -> Tensor:
    """The sum of ``t`` over every rank, differentiable (see :class:`_AllReduce`)."""
    return _AllReduce.apply(t)


def _pooled(layer: nn.Module) -> bool:
    """Whether ``layer`` pools its statistics over the ranks: it is ``synchronized`` (:func:`synchronize_normalization`)
    and a process group exists."""
    return layer.synchronized and dist.is_available() and dist.is_initialized()


def _rsqrt(y: Tensor, log_y: Tensor) -> Tensor:
    """``1 / sqrt(y)``, from ``log_y = log y`` where ``y`` is below the smallest normal float (or 0 by
    underflow), capped at the largest float there."""
    normal = y >= torch.finfo(y.dtype).tiny
    from_log = torch.exp((-0.5 * log_y).clamp_max(exp_bound(y.dtype)))
    return torch.where(normal, torch.rsqrt(torch.where(normal, y, 1.0)), from_log)


def _check_eps(eps: float) -> float:
    """``eps`` as a float, or ``ValueError`` unless it is finite and ``>= 0`` (a negative one makes a log of a
    negative number, NaN, for a channel of small spread)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


class ActNorm(Transform):
    """Per-channel affine ``z = (x - loc) * exp(-log_scale)`` with data-dependent initialisation.

    Glow (Kingma & Dhariwal 2018, Section 3.1). Dimension 1 is the channel (the
    feature of a vector, the channel of an image); an image of ``H x W`` pixels
    contributes ``H W`` copies of each channel's log-scale:
    ``log|det| = -H W sum_c log_scale_c``.

    On its first forward pass in training mode the layer sets ``loc`` and
    ``log_scale`` to the batch's per-channel mean and standard deviation, so
    its output starts at zero mean and unit variance (an empty batch leaves that
    to the next one). With ``synchronized = True`` (:func:`synchronize_normalization`, which ``invertible
    train`` calls under ``torchrun``) and a ``torch.distributed`` process group the statistics are pooled
    over all ranks, so every replica starts identical (every rank must then run that first pass). The ``initialized`` flag is a buffer: it is saved
    in ``state_dict`` and restored by ``load_state_dict``, so a reloaded model
    is not initialised a second time. Once the layer has seen the flag set, it
    remembers that in a Python attribute, so later passes read no tensor to decide
    (no device synchronisation per layer and step on a GPU, no graph break under
    ``torch.compile``); ``load_state_dict`` makes it read the flag again.
    The initialising pass itself branches on the data, so run it eagerly before
    compiling (the training loop's first step does): compiled, it breaks the graph
    inside :class:`~invertible.Compose`'s loop over its layers, and the compiler then
    runs that loop eagerly for good, every layer a graph of its own.

    A layer trained through its inverse (a flow fitted by its samples, as a variational posterior) has no data
    to start from: its first training-mode inverse pass with gradients on marks it initialised as it is (the
    identity), so a later forward pass does not overwrite what it has learnt. An inverse pass without
    gradients (``sample``) leaves the flag alone.

    A channel with no spread in that first batch (a single value per channel:
    a batch of one image at a level of 1x1 pixels; or a constant channel) is
    centred and keeps ``log_scale = 0``: dividing by its standard deviation of
    0 (plus ``eps``) would scale every later input by ``1 / eps``.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = _check_eps(eps)
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # a Python copy of `initialized` once it is True
        self.synchronized = False  # pool the initialising statistics over the ranks of a process group

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> bool:
        """Set ``loc`` and ``log_scale`` from the per-channel mean and std of ``x`` (pooled over all ranks when
        ``synchronized``).

        Two passes: the mean, then the mean squared deviation from it (the one-pass
        ``E[x^2] - E[x]^2`` cancels where ``|mean| >> std``). A channel has no spread when
        its largest and smallest values are equal: its deviations from the rounded mean
        are not exactly zero.
        Both passes run on ``x`` divided by a power of two at least half its channel's largest
        ``|x|`` (:func:`_unit`): the division and the final rescaling are exact, so the statistics
        are the same numbers, but neither ``sum x`` nor ``sum (x - mean)^2`` overflows (in float32
        ``x^2`` does from ``|x| ~ 2e19``, and the standard deviation became ``inf``).
        Returns whether it did: a batch with no values (on every rank) leaves the layer for the next one. A batch
        holding NaN or inf is refused with a ``ValueError`` (unless ``validate`` is off): it would set ``loc`` or
        ``log_scale`` to inf or NaN for good.
        """
        dims = [d for d in range(x.dim()) if d != 1]
        pooled = _pooled(self)
        if x.numel():
            extremes = torch.cat([x.amax(dim=dims), -x.amin(dim=dims)])
        else:
            extremes = x.new_full((2 * x.shape[1],), -math.inf)
        if pooled:
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        high, neg_low = extremes.view(2, -1)
        unit = _unit(torch.maximum(high, neg_low))
        x = x / self._view(unit, x)  # exact, and no overflow of the sums below for |x| up to the float range
        count = x.new_full((1,), x.numel() / x.shape[1])
        sums = torch.cat([x.sum(dim=dims), count])
        if pooled:
            dist.all_reduce(sums)
        # a NaN or inf of any rank reaches every rank's sums (NCCL's MAX of the extremes drops a NaN); off with
        # validate = False, where the training engine names the cause
        if self.validate and not bool(torch.isfinite(sums).all()):
            raise ValueError("ActNorm cannot initialise from a batch holding NaN or inf: its first batch sets its "
                             "loc and log_scale for good")
        total = sums[-1]
        if total == 0:
            return False
        mean = sums[:-1] / total
        sq = (x - self._view(mean, x)).pow(2).sum(dim=dims)
        if pooled:
            dist.all_reduce(sq)
        mean, std = mean * unit, (sq / total).sqrt() * unit
        self.loc.copy_(mean)
        self.log_scale.copy_(torch.where(high > -neg_low, torch.log(std + self.eps), 0.0))
        self.initialized.fill_(True)
        return True

    def _ladj(self, x: Tensor) -> Tensor:
        pixels = math.prod(x.shape[2:])
        return (-pixels * self.log_scale.sum()).expand(x.shape[0])

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # the loaded flag is read at the next training pass

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.loc.numel(), "ActNorm")
        if self.training and not self._known_initialized:
            self._known_initialized = bool(self.initialized) or self._initialize(x)
        z = (x - self._view(self.loc, x)) * torch.exp(-self._view(self.log_scale, x))
        return z, self._ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(z, self.loc.numel(), "ActNorm")
        if self.training and not self._known_initialized and torch.is_grad_enabled():
            self.initialized.fill_(True)  # trained through its inverse: keep what it learns from a later forward
            self._known_initialized = True
        x = z * torch.exp(self._view(self.log_scale, z)) + self._view(self.loc, z)
        return x, -self._ladj(z)


class BatchNorm(Transform):
    """Batch normalisation as a flow layer: ``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta``.

    Dinh et al. 2017 (RealNVP, Section 3.7) and Papamakarios et al. 2017 (MAF,
    which puts it between the MADEs). Statistics are per channel (dimension 1), over the batch and
    the pixels. In training mode ``(m, v)`` are the batch mean and (biased)
    variance and the running averages are updated; in evaluation mode the
    running averages are used. In both modes the log-det treats ``(m, v)`` as
    constants of the map, as the papers do, and is exact for that map:

        log|det| = H W sum_c [log_gamma_c - 1/2 log(v_c + eps)].

    ``inverse`` has no batch to take statistics from, so it always uses the
    running averages (the same map as evaluation-mode ``forward``); so does a
    training-mode ``forward`` on a batch of one, whose variance is undefined.

    With ``synchronized = True`` (set by :func:`synchronize_normalization`, which ``invertible train`` calls
    under ``torchrun``) and a ``torch.distributed`` process group, a training batch's ``(m, v)`` are those
    of the global batch, pooled over all ranks (as ``torch.nn.SyncBatchNorm`` does), with gradients through
    the pooling: each replica normalises its shard as the whole batch would be normalised, so a
    data-parallel run is the one-process run of the same global batch, and the running averages stay equal
    on every rank. Every rank must then run the same training-mode passes. Off by default: a layer makes no
    collective call of its own accord in a user's distributed program.

    Values near the float range. A training batch's channel whose largest ``|x|`` could overflow the
    sums of its statistics (``max |x| > sqrt(finfo.max / count) / 2`` for ``count`` values per channel:
    about 5e17 in float32 for 300 values) is normalised as ``x / s``, with ``s`` the largest power of
    two not above its largest ``|x|`` (an exact division, as in :class:`ActNorm`'s initialisation):
    ``z = (x / s - m / s) / sqrt((v + eps) / s^2)`` and ``log(v + eps) = log((v + eps) / s^2) + 2 log s``,
    so ``z`` and the log-det are finite wherever the exact ones are, even where ``v`` itself exceeds
    the float range. Other channels (``s = 1``) give the same numbers as the plain formula. Where ``(v + eps) / s^2``
    underflows (only a channel of equal values, beyond ~3e16 in float32, reaches it) it is summed in
    log space (:func:`~invertible.transforms.stable.log_add`): ``z = 0`` and the log-det is exact, but
    the gradient of such a channel, taken through ``x / s`` (``s / sqrt(eps)`` times the gradient of
    ``z``), overflows. The running variance saturates at the largest float.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}")
        self.momentum, self.eps = momentum, _check_eps(eps)
        self.log_gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.synchronized = False  # pool the statistics over the ranks of a process group (see the class)

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def _ladj(self, log_var: Tensor, x: Tensor) -> Tensor:
        """``H W sum_c [log_gamma_c - 1/2 log_var_c]``, ``log_var = log(v + eps)``."""
        pixels = math.prod(x.shape[2:])
        return (pixels * (self.log_gamma - 0.5 * log_var).sum()).expand(x.shape[0])

    def _batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x / s, m / s, s / sqrt(v + eps), log(v + eps))`` of a training batch (see the class), and the
        running averages updated with ``(m, v)``. ``s = 1`` unless ``max |x|`` exceeds
        ``sqrt(finfo.max / count) / 2``, below which no sum of the statistics can overflow."""
        dims = [d for d in range(x.dim()) if d != 1]
        finfo = torch.finfo(x.dtype)
        pooled = _pooled(self)
        count: int | Tensor = x.numel() // x.shape[1]
        with torch.no_grad():
            peak = _peak(x, dims)
            if pooled:
                dist.all_reduce(peak, op=dist.ReduceOp.MAX)
                count = torch.tensor([float(count)], dtype=torch.float64, device=x.device)
                dist.all_reduce(count)
                limit = (finfo.max / count).sqrt() / 2
                count = count.to(x.dtype)
            else:
                limit = math.sqrt(finfo.max / count) / 2
            unit = torch.where(peak > limit, _unit(peak), 1.0)
            log_unit = torch.log(unit)
        x = x / self._view(unit, x)
        if pooled:  # the global batch's statistics; the pooling's backward sums the gradients of every rank
            mean = _all_reduce(x.sum(dim=dims)) / count
            var = _all_reduce((x - self._view(mean, x)).pow(2).sum(dim=dims)) / count
        else:
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean * unit, self.momentum)
            self.running_var.lerp_((var * unit * unit).clamp_max(finfo.max), self.momentum)
        eps = self.eps / unit / unit  # may underflow to 0: (v + eps) / s^2 is then summed in log space
        log_var = log_add(var, (math.log(self.eps) if self.eps > 0 else -math.inf) - 2.0 * log_unit, eps)
        return x, mean, _rsqrt(var + eps, log_var), log_var + 2.0 * log_unit

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.log_gamma.numel(), "BatchNorm")
        if self.training and x.shape[0] > 1:
            scaled, mean, inv_std, log_var = self._batch_statistics(x)
        else:
            var_eps = self.running_var + self.eps
            scaled, mean, inv_std, log_var = x, self.running_mean, torch.rsqrt(var_eps), torch.log(var_eps)
        z = (scaled - self._view(mean, x)) * self._view(inv_std, x)
        z = z * self._view(torch.exp(self.log_gamma), x) + self._view(self.beta, x)
        return z, self._ladj(log_var, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(z, self.log_gamma.numel(), "BatchNorm")
        mean, var = self.running_mean, self.running_var
        x = (z - self._view(self.beta, z)) * self._view(torch.exp(-self.log_gamma), z)
        x = x * torch.sqrt(self._view(var, z) + self.eps) + self._view(mean, z)
        return x, -self._ladj(torch.log(var + self.eps), z)


def synchronize_normalization(module: nn.Module) -> int:
    """Make every :class:`ActNorm` and :class:`BatchNorm` in ``module`` pool its statistics over the ranks of the
    process group (``synchronized = True``): ActNorm's initialising batch and BatchNorm's training batches are
    then the global batch of a data-parallel run. Returns how many layers it set."""
    layers = [m for m in module.modules() if isinstance(m, (ActNorm, BatchNorm))]
    for layer in layers:
        layer.synchronized = True
    return len(layers)
