"""Linear bijections of images: invertible 1x1 convolutions and a periodic convolution inverted by FFT.

For an image of ``C`` channels and ``n = H W`` pixels (``d = C n``):

==============  ======================  =====================================  ==============================
layer           forward                 inverse                                log-det
==============  ======================  =====================================  ==============================
Conv1x1         O(C^2 n)                O(C^3) once + O(C^2 n)                 O(C^3) (``n log|det W|``)
LUConv1x1       O(C^2 n)                O(C^2) per column: two solves, cached  O(C)
PeriodicConv    O(C^2 n + C n log n)    O(C^3 n) once + O(C^2 n + C n log n)    O(C^3 n)
==============  ======================  =====================================  ==============================

The periodic convolution mixes pixels as well as channels and still costs
``O(d log d)`` in ``n`` for its inverse, where a dense ``d x d`` map costs ``O(d^3)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Transform
from ..seeding import seeded_generator
from .cache import InferenceCache
from .linear import LULinear
from .shapes import check_channels

__all__ = ["Conv1x1", "LUConv1x1", "PeriodicConv"]


def _conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``W x + b`` at every pixel as one batched matrix product: on CPU its backward pass is far
    cheaper than a convolution's for the few channels of a flow step."""
    z = torch.matmul(weight, x.flatten(2)).view(x.shape[0], weight.shape[0], *x.shape[2:])
    return z if bias is None else z + bias[:, None, None]


def _pixels(x: Tensor, channels: int, layer: str) -> int:
    """The number of positions a 1x1 convolution of ``x`` (``(batch, C, H, W)``) maps, each by the same matrix."""
    check_channels(x, channels, layer)
    if x.dim() != 4:
        raise ValueError(f"{layer} takes images (batch, {channels}, H, W), got shape {tuple(x.shape)}")
    return x.shape[2] * x.shape[3]


class Conv1x1(InferenceCache, Transform):
    """Glow's invertible 1x1 convolution ``z_ij = W x_ij`` with a dense ``C x C`` matrix.

    Kingma & Dhariwal 2018, Section 3.2: ``log|det| = H W log|det W|``. The
    log-determinant comes from an LU factorisation in float64 (``slogdet``),
    which stays accurate where ``log(det(W))`` in float32 under- or overflows;
    ``W`` starts as a random rotation (``log|det| = 0``). Weight inverse and
    log-det are cached at inference (see :class:`InferenceCache`).
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        g = seeded_generator(seed)
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels, generator=g))[0])

    def _logdet(self) -> Tensor:
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pixels = _pixels(x, self.weight.shape[0], "Conv1x1")
        return _conv1x1(x, self.weight), (pixels * self.cached("logdet", self._logdet)).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pixels = _pixels(z, self.weight.shape[0], "Conv1x1")
        w_inv = self.cached("inverse", lambda: torch.linalg.inv(self.weight.double()).to(self.weight.dtype))
        return _conv1x1(z, w_inv), (-pixels * self.cached("logdet", self._logdet)).expand(z.shape[0])


class LUConv1x1(InferenceCache, LULinear):
    """Glow's LU-parameterised 1x1 convolution: ``W = P L (U + diag(s))`` applied at every pixel, plus a bias.

    ``log|det| = H W sum log|s|`` costs ``O(C)``; the inverse matrix comes from
    two triangular solves and is cached at inference, as is ``W``.
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__(channels, seed)

    def _inverse_weight(self) -> Tensor:
        lower, upper = self._factors()
        # W^{-1} = U^{-1} L^{-1} P^T
        y = torch.linalg.solve_triangular(lower, self.permutation.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, y, upper=True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pixels = _pixels(x, self.bias.numel(), "LUConv1x1")
        z = _conv1x1(x, self.cached("weight", self.weight), self.bias)
        return z, (pixels * self.log_abs_s.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pixels = _pixels(z, self.bias.numel(), "LUConv1x1")
        x = _conv1x1(z - self.bias[:, None, None], self.cached("inverse", self._inverse_weight))
        return x, (-pixels * self.log_abs_s.sum()).expand(z.shape[0])


def _per_frequency(x: Tensor, matrices: Tensor) -> Tensor:
    """``ifft2(M(f) fft2(x)(f))``: the ``C x C`` matrix ``M(f)`` (``matrices``: ``(H, W, C, C)``) at every frequency.

    An empty batch is returned as it is (oneMKL's FFT rejects a zero-length batch).
    """
    if x.shape[0] == 0:
        return x.clone()
    x_hat = torch.fft.fft2(x).permute(0, 2, 3, 1).unsqueeze(-1)
    return torch.fft.ifft2((matrices @ x_hat).squeeze(-1).permute(0, 3, 1, 2)).real


class PeriodicConv(InferenceCache, Transform):
    """A ``k x k`` convolution with periodic (circular) boundaries over channels and pixels, inverted by FFT.

    ``z[c, i, j] = sum_{c', a, b} K[c, c', a, b] x[c', i - a, j - b]`` (indices
    mod ``H, W``, offsets ``a, b`` in ``-k//2 .. k//2``). By the convolution
    theorem the 2-D DFT block-diagonalises the map: at each frequency ``f``,
    ``z_hat(f) = K_hat(f) x_hat(f)`` with a ``C x C`` complex matrix, so

        log|det| = sum_f log|det K_hat(f)|,    x_hat(f) = K_hat(f)^{-1} z_hat(f).

    Forward and inverse cost ``O(C n log n)`` for the FFTs plus ``O(C^2 n)``
    per pass, plus ``O(C^3 n)`` once for the log-det and the per-frequency inverses (cached at inference), ``n = H W``:
    ``O(d log d)`` in the number of pixels. Hoogeboom, van den Berg & Welling,
    "Emerging Convolutions for Generative Normalizing Flows", ICML 2019
    (periodic convolutions, Section 3.2). The kernel starts at the identity.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        kernel = torch.zeros(channels, channels, kernel_size, kernel_size)
        kernel[:, :, kernel_size // 2, kernel_size // 2] = torch.eye(channels)
        self.kernel = nn.Parameter(kernel)

    def _spectrum(self, h: int, w: int) -> Tensor:
        """``K_hat`` of shape ``(H, W, C, C)``."""
        c, _, k, _ = self.kernel.shape
        if k > h or k > w:
            raise ValueError(f"kernel size {k} exceeds the image size {h}x{w}")
        offsets = torch.arange(k, device=self.kernel.device) - k // 2
        rows, cols = (offsets % h)[:, None], (offsets % w)[None, :]
        padded = self.kernel.new_zeros(c, c, h, w)
        padded[:, :, rows, cols] = self.kernel
        return torch.fft.fft2(padded).permute(2, 3, 0, 1)

    def _logdet(self, h: int, w: int) -> Tensor:
        return torch.linalg.slogdet(self.cached(f"spectrum{h}x{w}", lambda: self._spectrum(h, w)))[1].sum()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _pixels(x, self.kernel.shape[0], "PeriodicConv")
        h, w = x.shape[2:]
        z = _per_frequency(x, self.cached(f"spectrum{h}x{w}", lambda: self._spectrum(h, w)))
        return z, self.cached(f"logdet{h}x{w}", lambda: self._logdet(h, w)).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _pixels(z, self.kernel.shape[0], "PeriodicConv")
        h, w = z.shape[2:]
        x = _per_frequency(z, self.cached(f"inverse{h}x{w}", lambda: torch.linalg.inv(self._spectrum(h, w))))
        return x, -self.cached(f"logdet{h}x{w}", lambda: self._logdet(h, w)).expand(z.shape[0])
