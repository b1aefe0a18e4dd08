"""Caching of quantities that depend only on parameters (inverse matrices, log-dets) at inference."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["InferenceCache"]


def _unchanged(snapshot: list[Tensor], tensors: list[Tensor]) -> bool:
    """Whether ``tensors`` hold the values (dtype, device and shape too) of ``snapshot``."""
    return len(snapshot) == len(tensors) and all(
        s.dtype == t.dtype and s.device == t.device and s.shape == t.shape and torch.equal(s, t)
        for s, t in zip(snapshot, tensors)
    )


class InferenceCache:
    """Mixin for ``nn.Module``: ``self.cached(name, compute)`` memoises ``compute()`` at inference.

    The value is reused only in evaluation mode with gradients off, and only while
    every parameter and buffer of the module (those of its submodules too, so the
    originals behind ``nn.utils.parametrize`` count) holds the values, dtype and
    device it held when the value was computed: the module keeps a copy of them
    and compares it on every call, which costs ``O(#parameters)`` against the
    ``O(d^3)`` of an inverse or a log-det. So every way of changing a parameter
    is seen: an optimiser step (fused ones included, which leave the version
    counter alone), ``load_state_dict``, ``.to(dtype)``, a write through
    ``p.data``, ``torch.func.functional_call`` with other weights. In training
    mode, with gradients on, under ``torch.func`` transforms (``vmap``, ``jacrev``)
    or while ``torch.compile`` traces, it is computed afresh every call, so
    gradients reach the parameters and the transforms see their own tensors.
    Each call returns a copy of the stored value (again ``O(#parameters)``), so a caller's in-place write to
    what a layer returned (``ladj += ...`` on a batch of one, whose log-det is the stored scalar expanded)
    cannot change what later calls get.
    """

    def cached(self, name: str, compute: Callable[[], Tensor]) -> Tensor:
        if (
            self.training  # type: ignore[attr-defined]
            or torch.is_grad_enabled()
            or torch._C._are_functorch_transforms_active()
            or torch.compiler.is_compiling()
        ):
            return compute()
        tensors = [*self.parameters(), *self.buffers()]  # type: ignore[attr-defined]
        snapshot, store = self.__dict__.get("_inference_cache", (None, {}))
        if snapshot is None or not _unchanged(snapshot, tensors):
            snapshot, store = [t.detach().clone() for t in tensors], {}
            self.__dict__["_inference_cache"] = (snapshot, store)
        if name not in store:
            store[name] = compute().detach()
        return store[name].clone()
