"""Reshapes that are bijections: squeeze (space-to-depth) and reshape. Volume preserving, ``log|det| = 0``."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..core import Transform

__all__ = ["Squeeze", "Reshape"]


class Squeeze(Transform):
    """Space-to-depth: ``(C, H, W) -> (C f^2, H/f, W/f)``, each ``f x f`` block of pixels becomes channels.

    Dinh et al. 2017 (RealNVP), Section 3.6; Glow uses the same ordering: the
    output channel ``c f^2 + a f + b`` holds pixel ``(f i + a, f j + b)`` of
    input channel ``c``. ``inverse`` is depth-to-space.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"squeeze factor must be >= 1, got {factor}")
        self.factor = factor

    @staticmethod
    def _check_image(x: Tensor, direction: str) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{direction} takes a batch of images (batch, C, H, W), got shape {tuple(x.shape)}; "
                "Squeeze works on images (Reshape vectors to (C, H, W) first)"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_image(x, "Squeeze")
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"squeeze by {f} needs height and width divisible by {f}, got {h}x{w}")
        z = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(b, c * f * f, h // f, w // f)
        return z, x.new_zeros(b)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_image(z, "Squeeze.inverse (depth-to-space)")
        b, c, h, w = z.shape
        f = self.factor
        if c % (f * f):
            raise ValueError(f"unsqueeze by {f} needs channels divisible by {f * f}, got {c}")
        x = z.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (f * f), h * f, w * f)
        return x, z.new_zeros(b)


class Reshape(Transform):
    """``(batch, *in_shape) -> (batch, *out_shape)`` in row-major order, e.g. images to vectors for NICE."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        n_in, n_out = 1, 1
        for s in self.in_shape:
            n_in *= s
        for s in self.out_shape:
            n_out *= s
        if n_in != n_out:
            raise ValueError(f"cannot reshape {self.in_shape} ({n_in} values) to {self.out_shape} ({n_out} values)")

    @staticmethod
    def _check(x: Tensor, shape: tuple[int, ...], direction: str) -> None:
        """Events of ``shape`` (any other of as many values would be reshaped silently, to another bijection)."""
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{direction} takes (batch, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, self.in_shape, f"Reshape({self.in_shape} -> {self.out_shape})")
        return x.reshape(x.shape[0], *self.out_shape), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z, self.out_shape, f"Reshape({self.in_shape} -> {self.out_shape}).inverse")
        return z.reshape(z.shape[0], *self.in_shape), z.new_zeros(z.shape[0])
