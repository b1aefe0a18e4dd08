"""Caching of quantities that depend only on parameters (inverse matrices, log-dets) at inference."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["InferenceCache"]


class InferenceCache:
    """Mixin for ``nn.Module``: ``self.cached(name, compute)`` memoises ``compute()`` at inference.

    The value is reused only in evaluation mode with gradients off; it is
    keyed on the identity and version counter of every parameter and buffer
    of the module, so an in-place update of a parameter (an optimiser step,
    ``load_state_dict``, ``.to(dtype)``) recomputes it. Writes through ``p.data``
    bypass the version counter and are not seen: update parameters under
    ``torch.no_grad()`` instead. In training mode, or with gradients on, it is
    computed afresh every call so gradients reach the parameters. So it is for a
    module built or loaded under ``torch.inference_mode()``: its parameters are
    inference tensors, which keep no version counter, so an in-place update could
    not be told from none.
    """

    def cached(self, name: str, compute: Callable[[], Tensor]) -> Tensor:
        if self.training or torch.is_grad_enabled():  # type: ignore[attr-defined]
            return compute()
        tensors = [*self.parameters(recurse=False), *self.buffers(recurse=False)]  # type: ignore[attr-defined]
        if any(t.is_inference() for t in tensors):
            return compute()
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        store = self.__dict__.setdefault("_inference_cache", {})
        hit = store.get(name)
        if hit is None or hit[0] != key:
            hit = (key, compute().detach())
            store[name] = hit
        return hit[1]
