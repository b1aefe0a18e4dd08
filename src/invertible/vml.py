"""Settle the kernel choice of oneMKL's vector math (VML) before any parallel call can race for it.

PyTorch's CPU build computes contiguous float unary ops (``cos``, ``exp``, ``log``, ``sqrt``, ...) with
oneMKL's VML, each intra-op thread on its own chunk. oneMKL 2024.2 (the version the PyTorch wheels link)
picks the kernel of each VML function lazily, at its first call, and when that first call runs on several
threads at once one thread can run the low-accuracy kernel over its whole chunk: a float64 ``cos`` then errs
by about ``7e-9`` instead of ``1e-16`` on half of a tensor, in about one fresh process in a hundred
(pytorch/pytorch#188792; oneMKL 2025.0 and later are not affected). In a generated dataset this changes the
data themselves, and with them its fingerprint: a run then refuses to resume, having seen other data.

:func:`warm_up` calls each VML function once, for float32 and float64, on one element: ATen runs a tensor
that small on the calling thread, so every kernel is chosen before a parallel call, as the fix proposed
upstream does inside ATen. ``import invertible`` runs it; it costs well under a millisecond.
"""

from __future__ import annotations

import torch

__all__ = ["VML_FUNCTIONS", "warm_up"]

#: The torch functions that ATen computes with VML (``aten/src/ATen/cpu/vml.h``, ``IMPLEMENT_VML_MKL``).
VML_FUNCTIONS = ("acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin",
                 "sqrt", "tan", "tanh", "trunc")


def warm_up() -> None:
    """Call every function of :data:`VML_FUNCTIONS` once on a one-element float32 and float64 tensor."""
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            x = torch.full((1,), 0.5, dtype=dtype, device="cpu")  # whatever the default device
            for name in VML_FUNCTIONS:
                getattr(torch, name)(x)
