"""Autoregressive transforms on a MADE conditioner: MAF and IAF.

An autoregressive bijection transforms each coordinate with parameters that
depend on the coordinates before it in an order,

    z_i = tau(x_i; theta_i(x_<i, context)),

so its Jacobian is triangular and ``log|det| = sum_i log|tau'(x_i)|``. One pass
of a masked network (:class:`~invertible.nets.MaskedMLP`) gives every
``theta_i`` when ``x`` is known; inverting needs ``D`` sequential steps, since
``theta_i`` needs ``x_<i``. Which side is "known" decides which direction is fast:

- **MAF** (:class:`MaskedAffineAutoregressive`): the network reads the *data*.
  ``forward`` (density, ``log_prob``) is one pass; ``inverse`` (sampling) is
  ``D`` sequential steps.
- **IAF** (:class:`InverseAutoregressiveAffine`): the network reads the *noise*.
  ``inverse`` (sampling, and ``sample_and_log_prob`` of its own samples) is one
  pass; ``forward`` (density of an outside point) is ``D`` sequential steps.

The ``D`` steps use :meth:`MaskedMLP.sequential`, which evaluates each hidden
unit once (when the inputs up to its degree are known), so sampling a MAF costs
about one network pass plus ``D`` small matrix products per layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..core import Transform
from ..nets.made import MaskedMLP
from .coupling import affine_element, check_scale
from .shapes import check_event

__all__ = ["MaskedAffineAutoregressive", "InverseAutoregressiveAffine"]


class _Autoregressive(Transform):
    """An elementwise bijection ``tau`` whose per-coordinate parameters come from a MADE.

    Subclasses set ``params_per_dim`` and implement ``_element(x, params, inverse)``
    on ``x`` of shape ``(batch, k)`` and ``params`` of shape ``(batch, P, k)``,
    returning ``(y, log|dy/dx|)`` elementwise.
    """

    params_per_dim: int = 2

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context_features: int | None = None,
        order: str | Sequence[int] | Tensor = "default",
        random_degrees: bool = False,
        activation: str = "relu",
        seed: int = 0,
    ):
        super().__init__()
        self.features = features
        self.net = MaskedMLP(
            features,
            self.params_per_dim,
            hidden,
            context_features=context_features,
            order=order,
            random_degrees=random_degrees,
            activation=activation,
            seed=seed,
        )

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _one_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``z = tau(x; theta(x))``: the network reads ``x`` once."""
        check_event(x, (self.features,), type(self).__name__)
        y, ladj = self._element(x, self.net(x, context), inverse=False)
        return y, ladj.sum(1)

    def _sequential(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x = tau^{-1}(z; theta(x))``, solved coordinate by coordinate in the order."""
        # the steps read the first ``features`` columns only: a wider input came back cut to that width
        check_event(z, (self.features,), type(self).__name__)
        ladj = z.new_zeros(z.shape[0])

        def step(i: int, params: Tensor) -> Tensor:
            nonlocal ladj
            x_i, l_i = self._element(z[:, i : i + 1], params.unsqueeze(-1), inverse=True)
            ladj = ladj + l_i[:, 0]
            return x_i[:, 0]

        return self.net.sequential(step, z.shape[0], context, like=z), ladj

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(z, context)


class _Affine:
    """``z_i = x_i exp(beta_i) + m_i`` with ``beta_i = scale(raw_i)``; elementwise log-det ``beta_i``."""

    scale: str

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return affine_element(x, params, self.scale, inverse)


#: Starts of an affine autoregressive layer (see :class:`MaskedAffineAutoregressive`).
INITS = ("identity", "shear")


class MaskedAffineAutoregressive(_Affine, _Autoregressive):
    """The MAF layer: ``z_i = x_i exp(beta_i(x_<i)) + m_i(x_<i)``, ``log|det dz/dx| = sum_i beta_i``.

    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017 (Eq. 4-5); the network is a MADE (Germain et al. 2015).
    The paper writes the layer as ``z_i = (x_i - mu_i) exp(-alpha_i)``; that is the
    same family of maps with ``alpha = -beta`` and ``mu = -m exp(-beta)``. The
    network outputs ``beta`` and ``m`` directly (as :class:`AffineCoupling` does),
    so the density pass is one fused multiply-add per coordinate.

    **Fast direction: ``forward`` (data -> noise, i.e. ``log_prob``) in one network
    pass.** ``inverse`` (sampling) takes ``D`` sequential steps,
    ``x_i = (z_i - m_i) exp(-beta_i)``, with each hidden unit computed once (see
    :meth:`MaskedMLP.sequential`).

    Args:
        features: ``D``.
        hidden: hidden widths of the MADE.
        context_features: conditioning size; the context feeds every MADE hidden unit.
        order: autoregressive order (``"default"``, ``"reverse"``, ``"random"`` or a permutation).
            Stacking layers with different orders replaces explicit permutation layers.
        random_degrees: random hidden degrees (MADE's connectivity sampling) instead of cycled ones.
        scale: how the raw output becomes ``beta``: ``"softclamp"`` (``3 tanh(raw/3)``, default),
            ``"sigmoid"`` or ``"exp"`` (unbounded), as in :class:`AffineCoupling`.
        init: the layer's start. ``"identity"`` (default): every MADE output is zero, so
            ``z = x``. ``"shear"``: the ``beta`` outputs are zero and the ``m`` outputs
            keep ``nn.Linear``'s default initialisation, so the layer starts as a random
            volume-preserving map ``z_i = x_i + m_i(x_<i)`` (log-det exactly 0) whose
            hidden units get gradients from the first step (with a zero output layer
            they get none until its weights have grown). Both hold for the ``"softclamp"``
            and ``"exp"`` scales, which map a zero output to ``beta = 0``; ``"sigmoid"``
            maps it to ``beta = log sigmoid(2)``, a uniform contraction by 0.88.
        seed: seed of a random order or random degrees.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_features: int | None = None,
                 order: str | Sequence[int] | Tensor = "default", random_degrees: bool = False,
                 activation: str = "relu", scale: str = "softclamp", init: str = "identity", seed: int = 0):
        self.scale = check_scale(scale)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose from {list(INITS)}")
        super().__init__(features, hidden, context_features, order, random_degrees, activation, seed)
        if init == "shear":
            output = self.net.output
            output.reset_parameters()
            with torch.no_grad():  # rows are (param, feature): param 0 is beta, param 1 is m
                output.weight[:features].zero_()
                output.bias[:features].zero_()


class InverseAutoregressiveAffine(MaskedAffineAutoregressive):
    """The IAF layer: the MAF layer run the other way, so the network reads the *noise*.

    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved
    Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.

    ``inverse`` (noise ``u`` -> data ``x``): ``x_i = u_i exp(beta_i(u_<i)) + m_i(u_<i)``,
    ``log|det dx/du| = sum_i beta_i`` — the IAF update ``x = sigma(u) u + m(u)`` with
    ``sigma = exp(beta)``.

    **Fast direction: ``inverse`` (sampling) in one network pass**, together with the
    log-density of the samples: ``Flow.sample_and_log_prob`` and
    ``rsample_and_log_prob`` of an IAF flow are one pass per layer (the VAE
    posterior use). ``forward`` (the density of a point that was not sampled by
    the flow) takes ``D`` sequential steps.

    Same arguments as :class:`MaskedAffineAutoregressive`.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(z, context)
