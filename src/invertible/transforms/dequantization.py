"""Dequantization: from discrete pixel values to a continuous density, with honest bits/dim.

Discrete data ``x in {0, ..., L-1}^d`` has a probability mass ``P(x)``, not a
density. Dequantization adds noise ``u in (0, 1)^d`` and models ``y = (x + u) / L``
in ``(0, 1)^d`` with a continuous density ``q``. For any noise distribution
``r(u | x)`` (Jensen's inequality; Theis et al. 2016, Ho et al. 2019, Flow++):

    log P(x) >= E_{u ~ r(.|x)} [ log q((x + u) / L) - d log L - log r(u | x) ].

The layers here return ``y`` and, as their "log-det", the per-sample term
``-d log L - log r(u | x)``: adding it to the model's ``log q(y)`` gives a
one-sample unbiased estimate of that lower bound, so minimising the negative
is the variational objective and ``-bound / (d log 2)`` is an upper bound on
the true bits/dim (an honest figure: never better than the truth). For
uniform noise ``log r = 0``; a uniform model ``q = 1`` on ``(0, 1)^d`` then
scores exactly ``log2 L`` bits/dim.

These maps are surjections, not bijections: ``forward`` draws fresh noise, and
``inverse`` quantises, ``x = floor(L y)``, returning the negated term for that
``y`` (so ``inverse(forward(x)) == (x, -ladj)`` holds exactly, in floating point too). ``exact_logdet``
is False because the value is a stochastic bound, not a Jacobian.

``forward`` takes pixels of an integer (``uint8`` images) or boolean dtype as floats of the layer's dtype (that of
its parameters: float64 after ``.double()``; torch's default for the uniform one, which has none), and refuses
values that are not integers in ``[0, L - 1]`` with a ``ValueError``; the check
reads the data back on every call, and ``validate = False`` (:attr:`~invertible.Transform.validate`)
switches it off for batches checked before (the training engine checks a bundle's pixels when it loads them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Compose, Transform, flow_dtype, sum_except_batch, vmapped
from .image_coupling import AffineImageCoupling
from .normalization import ActNorm

__all__ = ["UniformDequantization", "VariationalDequantization"]

_LOG_2PI = math.log(2 * math.pi)
#: How far the logit of the noise ``y`` carries may lie from the drawn noise's before the carried noise is scored
#: (:meth:`VariationalDequantization._carried_log_noise`): ``log r`` moves by about the logit's change.
_CARRIED_LOGIT_TOLERANCE = 1e-3


def _open_unit(u: Tensor) -> Tensor:
    """``u`` in the open interval ``(0, 1)``: an exact 0 becomes ``s = eps / 2`` (``2^-24`` in float32, ``2^-53`` in
    float64: the step of ``torch.rand``'s grid) and an exact 1 the float below it, ``1 - s``; every other value, and
    its gradient, is kept.

    ``torch.rand`` draws 0 with probability ``s`` per value (in float32 about once per 17 million pixels, so many
    times in a long image run), and a saturated sigmoid returns exactly 0 or 1; ``u = 0`` at a pixel 0 gives
    ``y = 0``, which ``Logit(alpha=0)`` maps to ``-inf``.
    """
    step = torch.finfo(u.dtype).eps / 2
    return torch.where((u > 0) & (u < 1), u, u.clamp(step, 1 - step))


def _row_normals(x: Tensor) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn so that each row's values do not depend on the batch it
    is in: every row takes the next ``16 ceil(d / 16)`` normals of the stream (``d`` values per row), and keeps
    its first ``d``.

    The CPU generator draws ``randn`` in blocks of 16 and redraws the last block of a request whose size is not
    a multiple of 16, so ``randn_like(x)`` splits its stream differently for every batch size when ``d`` is not
    a multiple of 16: the noise of a row, and an evaluation's log-densities, would change with the batch size
    (uniform noise draws one value per element and needs no padding). When ``d`` is a multiple of 16 this is
    ``randn_like(x)`` itself.
    """
    d = math.prod(x.shape[1:])
    padded = -(-d // 16) * 16
    return torch.randn(x.shape[0], padded, dtype=x.dtype, device=x.device)[:, :d].reshape(x.shape)


def _in_bin(x: Tensor, u: Tensor, levels: int) -> Tensor:
    """``y = (x + u) / L``, placed so that ``floor(L y) == x`` holds in floating point too.

    In exact arithmetic ``u < 1`` keeps ``y`` in ``x``'s bin; in floating point ``x + u``
    rounds up to ``x + 1`` when ``1 - u`` is within half an ulp of ``x`` (or ``u = 1``, a
    saturated sigmoid), and ``L ((x + u) / L)`` can round across a bin edge when ``L`` is
    not a power of two. So a ``y`` that quantises to a neighbour moves one ulp inward at a
    time, to the float of the bin nearest the rounded ``(x + u) / L``: two passes are enough
    for every ``u`` in ``[0, 1]`` at both edges of every bin for every ``L <= 256``, float32
    and float64. Gradients pass through ``u``: ``dy/du = 1 / L``.
    """
    y = (x + u) / levels
    with torch.no_grad():
        placed = y.clone()
        for _ in range(2):
            bins = torch.floor(placed * levels)
            placed = torch.where(bins > x, torch.nextafter(placed, torch.zeros_like(placed)), placed)
            placed = torch.where(bins < x, torch.nextafter(placed, torch.ones_like(placed)), placed)
    return y + (placed - y.detach())  # the same value as ``placed``; the one-ulp moves carry no gradient


class _Dequantization(Transform):
    exact_logdet = False

    def __init__(self, levels: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels = int(levels)

    def _check(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` holds integers in ``[0, L - 1]``; off with ``validate = False``, and on a
        tensor that ``torch.func.vmap`` batches (no branch on its values is possible there)."""
        if not self.validate or vmapped(x):
            return
        if ((x < 0) | (x > self.levels - 1) | (x != torch.round(x))).any():
            raise ValueError(f"dequantization expects integer values in [0, {self.levels - 1}]")

    def _noise(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Draw ``u ~ r(u | x)`` in ``(0, 1)`` and return ``(u, log r(u | x))``."""
        raise NotImplementedError

    def _log_noise(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.is_complex():
            raise TypeError(f"dequantization expects real pixel values, got dtype {x.dtype}")
        if not x.is_floating_point():
            x = x.to(flow_dtype(self))
        self._check(x)
        u, log_r = self._noise(x, context)
        y = _in_bin(x, u, self.levels)
        d = math.prod(x.shape[1:])
        return y, -d * math.log(self.levels) - self._carried_log_noise(y, x, u, log_r, context)

    def _carried_log_noise(self, y: Tensor, x: Tensor, u: Tensor, log_r: Tensor, context: Tensor | None) -> Tensor:
        """``log r`` of the noise that ``y`` carries, given the drawn ``u`` and its ``log_r``: ``log_r`` itself here."""
        return log_r

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scaled = z * self.levels
        x = torch.floor(scaled).clamp(0, self.levels - 1)
        u = scaled - x
        d = math.prod(z.shape[1:])
        return x, d * math.log(self.levels) + self._log_noise(u, x, context)


class UniformDequantization(_Dequantization):
    """``y = (x + u) / L`` with ``u ~ U(0, 1)^d``: the bound's term is ``-d log L`` (Theis et al. 2016).

    ``u`` is ``torch.rand``'s draw with an exact 0 replaced by the grid's smallest positive value (see
    :func:`_open_unit`), so ``y > 0`` at a pixel 0.
    """

    def _noise(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _open_unit(torch.rand_like(x)), x.new_zeros(x.shape[0])

    def _log_noise(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return u.new_zeros(u.shape[0])


class VariationalDequantization(_Dequantization):
    """Flow++'s variational dequantization: the noise ``u`` comes from a flow conditioned on ``x``.

    Ho, Chen, Srinivas, Duan & Abbeel, "Flow++", ICML 2019, Section 3.1.
    ``e ~ N(0, I)``, ``v = g^{-1}(e; x)`` by ``steps`` affine checkerboard
    couplings whose conditioners see the image ``x`` (scaled to [-1, 1]) as
    extra channels, and ``u = sigmoid(v)``:

        log r(u | x) = log N(e) + log|de/dv| - log sigmoid'(v).

    Where the sigmoid saturates to exactly 0 or 1, ``u`` is moved to ``eps / 2`` or ``1 - eps / 2``
    (:func:`_open_unit`), so it stays in the open interval ``(0, 1)``; there, and where ``y`` holds the noise only
    roughly (near a bin edge, where the float spacing of ``y`` is a large part of the noise's distance to the edge),
    the term of that image is ``log r`` of the noise ``y`` carries, the value ``inverse`` reads back, so
    ``inverse(forward(x)) == (x, -ladj)`` holds at saturated noise too.

    Trained jointly with the model on the bound above, ``r`` learns to put the
    noise where the model's density is high, which tightens the bound; the
    reported bits/dim stay an upper bound on the truth.

    The noise flow runs in its inverse direction while the model trains, so its
    ActNorm layers start at the identity (on standard normal ``e``) and are
    marked initialised: a training-mode ``inverse`` (quantising a sample) does
    not reset them to the statistics of the residuals it sees.

    Args:
        levels: number of discrete values per dimension.
        event_shape: ``(C, H, W)`` of the images.
        steps: coupling layers of the noise flow.
        hidden: channels of their conditioners.
    """

    def __init__(self, levels: int, event_shape: tuple[int, int, int], steps: int = 4, hidden: int = 32):
        super().__init__(levels)
        c = event_shape[0]
        layers: list[Transform] = []
        for i in range(steps):
            norm = ActNorm(c)
            norm.initialized.fill_(True)
            layers.append(norm)
            layers.append(AffineImageCoupling(event_shape, "checkerboard", i % 2, hidden, context_features=c, scale="softclamp"))
        self.noise_flow = Compose(layers)
        self.event_shape = tuple(int(s) for s in event_shape)

    def _check_shape(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` is a batch of images of the noise flow's ``(C, H, W)``."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"variational dequantization of images {self.event_shape} got a batch of shape "
                             f"{tuple(x.shape)}; expected (batch, {', '.join(map(str, self.event_shape))})")

    def _condition(self, x: Tensor) -> Tensor:
        return 2 * x / (self.levels - 1) - 1

    def _noise(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_shape(x)
        e = _row_normals(x)
        v, ladj = self.noise_flow.inverse(e, self._condition(x))
        log_v = sum_except_batch(-0.5 * (e.pow(2) + _LOG_2PI)) - ladj
        log_u = log_v + sum_except_batch(F.softplus(v) + F.softplus(-v))
        return _open_unit(torch.sigmoid(v)), log_u

    def _carried_log_noise(self, y: Tensor, x: Tensor, u: Tensor, log_r: Tensor, context: Tensor | None) -> Tensor:
        """``log r`` of the noise ``y`` carries, the noise :meth:`inverse` reads back: the drawn noise's ``log_r``,
        except for an image with a pixel whose noise ``y`` holds only roughly, where it is :meth:`_log_noise` of
        the carried noise ``L y - x``. That is a noise at the edge of the float grid (a saturated sigmoid, moved by
        :func:`_open_unit`), or one whose logit ``log(u / (1 - u))`` the rounding of ``y`` moves by more than
        :data:`_CARRIED_LOGIT_TOLERANCE`: near a bin edge the spacing of the floats near ``(x + u) / L`` is a large
        part of the noise's distance to the edge (a noise within an ulp of ``x`` is lost in ``x + u`` altogether,
        one within an ulp of ``x + 1`` is moved back into the bin by :func:`_in_bin`), and the two ``log r`` differ
        by up to the whole tail of ``r``."""
        if vmapped(y):
            return log_r
        step = torch.finfo(u.dtype).eps / 2
        carried = y * self.levels - x
        # |d logit(u)| = |du| / (u (1 - u)); log r changes by about as much
        moved = (carried - u).abs() > _CARRIED_LOGIT_TOLERANCE * u * (1 - u)
        edge = (u <= step) | (u >= 1 - step) | moved
        lost = edge.flatten(1).any(1)
        if not lost.any():
            return log_r
        return torch.where(lost, self._log_noise(carried, x, context), log_r)

    def _log_noise(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        self._check_shape(x)
        u = _open_unit(u)
        v = torch.log(u) - torch.log1p(-u)
        e, ladj = self.noise_flow(v, self._condition(x))
        return sum_except_batch(-0.5 * (e.pow(2) + _LOG_2PI)) + ladj + sum_except_batch(F.softplus(v) + F.softplus(-v))
