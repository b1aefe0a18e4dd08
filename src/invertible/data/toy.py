"""Built-in 2-D toy densities: the ``toy_data`` sets of FFJORD, with seeds and exact densities.

The definitions and scales follow ``toy_data.inf_train_gen`` of Grathwohl et
al., "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
Models", ICLR 2019 (itself following Behrmann et al.'s i-ResNet code), so
pictures and numbers compare with the literature. Where ``toy_data`` spaces
angles evenly (``rings``, ``circles``, ``moons``), the samplers here draw them
uniformly at random — the continuum limit of the same shape, whose density is
then a proper continuous function.

Exact log-densities (in nats) are given for

- ``checkerboard``: uniform on 8 of the 16 squares of side 2 in ``[-4, 4]^2``,
  ``log p = -log 32`` on the (closed) support, ``-inf`` off it;
- ``8gaussians``: ``(1/8) sum_k N(x; 4 c_k / 1.414, (0.5 / 1.414)^2 I)`` with
  ``c_k`` the 8 unit vectors at multiples of 45 degrees;
- ``rings`` and ``circles``: mixtures of rings of radius ``r`` blurred by
  isotropic noise ``sigma``; averaging ``N(x; r u(theta), sigma^2 I)`` over a
  uniform angle gives the Rician form
  ``p(x) = exp(-(|x|^2 + r^2) / (2 sigma^2)) I_0(|x| r / sigma^2) / (2 pi sigma^2)``.

With ``log_prob`` known, ``KL(p || q) = E_p[log p(x) - log q(x)]`` is estimated
without bias on the test split; this is the "KL gap" ``NLL(test) - H(p)``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import torch
from torch import Tensor

from .registry import DataBundle, check_seed, register_dataset

__all__ = ["TOY_SAMPLERS", "TOY_LOG_PROBS", "make_toy_bundle"]

Sampler = Callable[[int, torch.Generator], Tensor]

_LOG_2PI = math.log(2 * math.pi)


def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _normal(*shape: int, g: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _shuffle(x: Tensor, g: torch.Generator) -> Tensor:
    return x[torch.randperm(x.shape[0], generator=g)]


def _check_points(x: Tensor) -> None:
    """``TypeError`` unless ``x`` is a floating-point tensor, ``ValueError`` unless its last dimension holds the
    two coordinates of a point: the densities would otherwise read a transposed batch ``(2, n)`` or points of
    another width without a word (the rings take the norm over every coordinate, the checkerboard the first two)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = f"a tensor of dtype {x.dtype}" if isinstance(x, Tensor) else f"a {type(x).__name__}"
        raise TypeError(f"the toy densities take a floating-point tensor of 2-D points, got {kind}")
    if x.dim() < 1 or x.shape[-1] != 2:
        raise ValueError(f"the toy densities take 2-D points, a tensor of shape (..., 2); got shape {tuple(x.shape)}")


# -- checkerboard -----------------------------------------------------------------------
def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    x1 = _uniform(n, g) * 4 - 2
    x2 = _uniform(n, g) - torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    """``-log 32`` on the closed squares ``[2i, 2i + 2] x [2j, 2j + 2]`` with ``i + j`` even, ``-inf`` off them.

    The squares are closed so that a sample rounded onto an edge of its square (the float32
    splits are drawn in float64) stays on the support; the edges have no mass.
    """
    _check_points(x)
    u = x / 2
    inside = (u.abs() <= 2).all(-1)
    below = (torch.ceil(u) - 1).clamp(-2, 1)  # the squares i <= u <= i + 1 that hold u: i = ceil(u) - 1 and floor(u)
    above = torch.floor(u).clamp(-2, 1)
    on = torch.zeros_like(inside)
    for i in (below[..., 0], above[..., 0]):
        for j in (below[..., 1], above[..., 1]):
            on = on | ((i + j) % 2 == 0)
    value = torch.full(x.shape[:-1], -math.log(32.0), dtype=x.dtype, device=x.device)
    return torch.where(inside & on, value, torch.full_like(value, -math.inf))


# -- 8 gaussians ------------------------------------------------------------------------
_EIGHT_SCALE = 4.0 / 1.414
_EIGHT_STD = 0.5 / 1.414


def _eight_centers(dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
    angles = torch.arange(8, dtype=dtype, device=device) * (math.pi / 4)
    return torch.stack([torch.cos(angles), torch.sin(angles)], 1) * _EIGHT_SCALE


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    return _eight_centers()[k] + _normal(n, 2, g=g) * _EIGHT_STD


def _eight_gaussians_log_prob(x: Tensor) -> Tensor:
    _check_points(x)
    c = _eight_centers(x.dtype, x.device)
    sq = (x.unsqueeze(-2) - c).pow(2).sum(-1) / _EIGHT_STD**2
    comp = -0.5 * sq - _LOG_2PI - 2 * math.log(_EIGHT_STD)
    return torch.logsumexp(comp, -1) - math.log(8)


# -- rings and circles: mixtures of noisy circles ------------------------------------------
def _ring_sampler(radii: tuple[float, ...], sigma: float) -> Sampler:
    def sample(n: int, g: torch.Generator) -> Tensor:
        r = torch.tensor(radii, dtype=torch.float64)[torch.randint(0, len(radii), (n,), generator=g)]
        theta = _uniform(n, g) * (2 * math.pi)
        x = torch.stack([torch.cos(theta), torch.sin(theta)], 1) * r[:, None]
        return x + _normal(n, 2, g=g) * sigma

    return sample


def _ring_log_prob(radii: tuple[float, ...], sigma: float) -> Callable[[Tensor], Tensor]:
    def log_prob(x: Tensor) -> Tensor:
        _check_points(x)
        rho = x.norm(dim=-1, keepdim=True)
        r = torch.tensor(radii, dtype=x.dtype, device=x.device)
        s2 = sigma**2
        # exp(-(rho^2 + r^2)/(2 s2)) I0(rho r / s2) = exp(-(rho - r)^2 / (2 s2)) i0e(rho r / s2)
        comp = -((rho - r) ** 2) / (2 * s2) + torch.log(torch.special.i0e(rho * r / s2)) - math.log(2 * math.pi * s2)
        return torch.logsumexp(comp, -1) - math.log(len(radii))

    return log_prob


_RINGS = ((0.75, 1.5, 2.25, 3.0), 0.08)  # toy_data: radii (1/4, 2/4, 3/4, 1) * 3, noise 0.08 after scaling
_CIRCLES = ((3.0, 1.5), 0.24)  # sklearn make_circles(factor=0.5, noise=0.08) * 3


# -- sets without a closed-form density -----------------------------------------------------
def _moons(n: int, g: torch.Generator) -> Tensor:
    """sklearn ``make_moons(noise=0.1)``, then ``* 2 + (-1, -0.2)`` as in ``toy_data``."""
    theta = _uniform(n, g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    xu = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    xl = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    x = torch.where(upper[:, None], xu, xl) + _normal(n, 2, g=g) * 0.1
    return x * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    """Five arms: radial std 0.3, tangential std 0.1, twist rate 0.25, scaled by 2."""
    radial_std, tangential_std, rate, classes = 0.3, 0.1, 0.25, 5
    labels = torch.randint(0, classes, (n,), generator=g)
    feats = _normal(n, 2, g=g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    feats[:, 0] += 1.0
    angles = labels.double() * (2 * math.pi / classes) + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    # toy_data's einsum("ti,tij->tj") with rotation [[c, -s], [s, c]]
    x = torch.stack([feats[:, 0] * c + feats[:, 1] * s, -feats[:, 0] * s + feats[:, 1] * c], 1)
    return 2 * x


def _two_spirals(n: int, g: torch.Generator) -> Tensor:
    half = n // 2
    t = torch.sqrt(_uniform(n - half, g)) * (540 * 2 * math.pi / 360)
    dx = -torch.cos(t) * t + _uniform(n - half, g) * 0.5
    dy = torch.sin(t) * t + _uniform(n - half, g) * 0.5
    arm = torch.stack([dx, dy], 1)
    x = torch.cat([arm, -arm[:half]], 0) / 3
    return _shuffle(x + _normal(n, 2, g=g) * 0.1, g)


def _swissroll(n: int, g: torch.Generator) -> Tensor:
    """sklearn ``make_swiss_roll(noise=1.0)`` keeping coordinates (0, 2), divided by 5."""
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    return (x + _normal(n, 2, g=g)) / 5


TOY_SAMPLERS: dict[str, Sampler] = {
    "moons": _moons,
    "circles": _ring_sampler(*_CIRCLES),
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "rings": _ring_sampler(*_RINGS),
    "swissroll": _swissroll,
}

#: Exact log-densities (nats) of the toys that have one in closed form.
TOY_LOG_PROBS: dict[str, Callable[[Tensor], Tensor]] = {
    "checkerboard": _checkerboard_log_prob,
    "8gaussians": _eight_gaussians_log_prob,
    "rings": _ring_log_prob(*_RINGS),
    "circles": _ring_log_prob(*_CIRCLES),
}


_DESCRIPTIONS = {
    "moons": "two interleaved half circles",
    "circles": "two noisy circles, radii 3 and 1.5",
    "8gaussians": "eight Gaussians on a circle",
    "checkerboard": "uniform on 8 squares of a 4x4 checkerboard",
    "pinwheel": "five twisted arms",
    "2spirals": "two interleaved spirals",
    "rings": "four noisy concentric circles",
    "swissroll": "the swiss roll seen from above",
}


def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _sampler_seed(seed: int) -> int:
    """The generator seed of ``bundle.sampler(n, seed)``: the first 8 bytes of a SHA-256 of ``seed``, so that fresh
    samples do not replay the draws of the splits, which use the data seed itself (with it, ``sampler(n, 0)``
    repeated the first coordinates of the checkerboard's seed-0 training rows and the components of 8gaussians')."""
    return int.from_bytes(hashlib.sha256(f"toy sampler {seed}".encode()).digest()[:8], "little")


def make_toy_bundle(name: str, seed: int = 0, n_train: int = 50_000, n_val: int = 5_000, n_test: int = 10_000) -> DataBundle:
    """Draw train/validation/test splits of the toy ``name`` (float32) from one seeded stream.

    The same seed gives the same splits; ``bundle.sampler(n, seed)`` draws fresh
    float32 samples (from a stream of its own, :func:`_sampler_seed`, whatever the
    seeds), and ``bundle.log_prob`` is the exact density where known.
    """
    if name not in TOY_SAMPLERS:
        raise ValueError(f"unknown toy dataset {name!r}; choose from {sorted(TOY_SAMPLERS)}")
    sizes = [_check_size("n_train", n_train, 1), _check_size("n_val", n_val, 0), _check_size("n_test", n_test, 0)]
    raw = TOY_SAMPLERS[name]

    def sampler(n: int, seed: int = 0) -> Tensor:
        _check_size("n", n, 0)
        return raw(n, torch.Generator().manual_seed(_sampler_seed(check_seed(seed)))).float()

    train, val, test = raw(sum(sizes), torch.Generator().manual_seed(check_seed(seed))).float().split(sizes)
    return DataBundle(
        name=name,
        train=train.contiguous(),
        val=val.contiguous(),
        test=test.contiguous(),
        log_prob=TOY_LOG_PROBS.get(name),
        sampler=sampler,
    )


def _register(name: str) -> None:
    def load(seed: int = 0, n_train: int = 50_000, n_val: int = 5_000, n_test: int = 10_000) -> DataBundle:
        return make_toy_bundle(name, seed, n_train, n_val, n_test)

    load.__name__ = f"load_{name}"
    exact = "; exact log_prob" if name in TOY_LOG_PROBS else ""
    load.__doc__ = f"2-D toy: {_DESCRIPTIONS[name]}{exact}."
    register_dataset(name)(load)


for _name in TOY_SAMPLERS:
    _register(_name)
