"""Shape checks of layers whose parameters would otherwise broadcast over events of another shape.

A layer with one parameter per feature (or channel) multiplies an input of another width by
broadcasting whenever either side is 1, or along a trailing dimension of the same size, and its
log-det, which counts each parameter once per event it was built for, is then wrong without any error.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

__all__ = ["check_channels", "check_event", "check_last"]


def check_channels(x: Tensor, channels: int, layer: str) -> None:
    """``ValueError`` unless ``x`` is a batch with ``channels`` features (vectors) or channels (images) in dimension 1."""
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(
            f"{layer} expected a batch with {channels} features/channels in dimension 1, got shape {tuple(x.shape)}"
        )


def check_event(x: Tensor, event_shape: Sequence[int], layer: str) -> None:
    """``ValueError`` unless ``x`` is a batch of events of shape ``event_shape``."""
    if tuple(x.shape[1:]) != tuple(event_shape):
        shape = ", ".join(map(str, event_shape))
        raise ValueError(f"{layer} expected a batch of events (batch, {shape}), got shape {tuple(x.shape)}")


def check_last(x: Tensor, features: int, layer: str) -> None:
    """``ValueError`` unless ``x`` has ``features`` in its last dimension (layers that take ``(..., batch, D)``)."""
    if x.dim() < 1 or x.shape[-1] != features:
        raise ValueError(f"{layer} expected inputs of shape (..., {features}), got shape {tuple(x.shape)}")
