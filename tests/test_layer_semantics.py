"""What the generic property suite cannot see: a layer can be a perfectly good bijection with an exact log-det and
still not be the layer its docstring (or its paper) defines. These tests pin down parameter semantics, masks and
orderings, initial values, train and eval statistics, and the layer sequences of the presets, from closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invertible.transforms import (
    ActNorm,
    AffineCoupling,
    AffineImageCoupling,
    AffinePrior,
    BatchNorm,
    BlockDiagonalLinear,
    Conv1x1,
    FactorOut,
    Logit,
    LUConv1x1,
    LULinear,
    PeriodicConv,
    Squeeze,
    VariationalDequantization,
    alternating_mask,
    checkerboard_mask,
    channel_mask,
)

from .perturb import perturb

LOG_SIGMOID_2 = math.log(1 / (1 + math.exp(-2.0)))  # Glow's log-scale at a zero network output


# ---------------------------------------------------------------- masks and Glow's scale


def test_masks_mark_the_documented_identity_part() -> None:
    assert alternating_mask(5, 0).tolist() == [True, False, True, False, True]
    assert alternating_mask(5, 1).tolist() == [False, True, False, True, False]
    assert checkerboard_mask(2, 3, 0).tolist() == [[[True, False, True], [False, True, False]]]
    assert checkerboard_mask(2, 3, 1).tolist() == [[[False, True, False], [True, False, True]]]
    assert channel_mask(3, 0).tolist() == [True, True, False]  # ceil(3 / 2) channels stay
    assert channel_mask(4, 1).tolist() == [False, False, True, True]


def test_sigmoid_scale_starts_at_sigmoid_of_two() -> None:
    """Glow's scale ``sigmoid(raw + 2)``: a zero-initialised conditioner scales the transformed part by 0.88."""
    x = torch.randn(3, 4, dtype=torch.float64)
    layer = AffineCoupling(alternating_mask(4), hidden=(8,), scale="sigmoid").double()
    z, ladj = layer(x)
    keep = alternating_mask(4)
    torch.testing.assert_close(z[:, keep], x[:, keep])
    torch.testing.assert_close(z[:, ~keep], x[:, ~keep] / (1 + math.exp(-2.0)))
    torch.testing.assert_close(ladj, torch.full((3,), 2 * LOG_SIGMOID_2, dtype=torch.float64))
    # the image coupling's default scale is Glow's: 2 of 3 channels x 4 pixels transformed
    image = AffineImageCoupling((3, 2, 2), "channel", 1, hidden=4).double()
    _, ladj = image(torch.randn(2, 3, 2, 2, dtype=torch.float64))
    torch.testing.assert_close(ladj, torch.full((2,), 8 * LOG_SIGMOID_2, dtype=torch.float64))


# ---------------------------------------------------------------- normalisation: train and eval


def test_actnorm_initialises_in_training_mode_only() -> None:
    layer = ActNorm(2).eval()
    x = 3.0 + 2.0 * torch.randn(32, 2)
    z, ladj = layer(x)
    assert not bool(layer.initialized)
    assert torch.equal(z, x) and torch.equal(ladj, torch.zeros(32))


def test_batchnorm_running_averages_follow_the_momentum() -> None:
    """``running <- (1 - m) running + m batch`` (biased batch variance), in training mode and never in evaluation."""
    torch.manual_seed(0)
    m = 0.25
    bn = BatchNorm(2, momentum=m).double()
    batches = [torch.randn(16, 2, 3, 3, dtype=torch.float64) * s + s for s in (1.0, 3.0)]
    mean, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for x in batches:
        bn(x)
        mean = (1 - m) * mean + m * x.mean((0, 2, 3))
        var = (1 - m) * var + m * x.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    # evaluation: the running averages normalise, and they stay as they are
    bn.eval()
    x = batches[0] * 2 - 1
    z, ladj = bn(x)
    torch.testing.assert_close(z, (x - mean.view(1, 2, 1, 1)) / torch.sqrt(var.view(1, 2, 1, 1) + bn.eps))
    torch.testing.assert_close(ladj, torch.full((16,), -0.5 * 9 * torch.log(var + bn.eps).sum().item(), dtype=torch.float64))
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)


def test_batchnorm_on_a_training_batch_of_one_uses_and_keeps_the_running_averages() -> None:
    bn = BatchNorm(3, momentum=0.5).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.tensor([[3.0, -1.0, 0.5]], dtype=torch.float64)
    z, _ = bn.train()(x)
    torch.testing.assert_close(z, (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps))
    torch.testing.assert_close(bn.running_mean, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(bn.running_var, torch.tensor([4.0, 0.25, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------- linear maps


def test_lu_layers_start_at_a_rotation() -> None:
    """``W = P L (U + diag(sign(s) |s|))`` reproduces the random rotation it was factored from (signs included)."""
    eye = torch.eye(5)
    for layer in (LULinear(5, seed=3), LUConv1x1(5, seed=3)):
        w = layer.weight()
        torch.testing.assert_close(w @ w.T, eye, atol=1e-5, rtol=0)
    w = Conv1x1(5, seed=3).weight.detach()
    torch.testing.assert_close(w @ w.T, eye, atol=1e-5, rtol=0)
    z, ladj = Conv1x1(5, seed=3)(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(ladj, torch.zeros(2), atol=1e-5, rtol=0)


def test_block_diagonal_blocks_act_on_contiguous_features() -> None:
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(6, 2).double()
    perturb(layer)
    x = torch.randn(6, dtype=torch.float64)
    jac = torch.func.jacrev(lambda v: layer(v.unsqueeze(0))[0][0])(x)
    torch.testing.assert_close(jac, torch.block_diag(*layer.blocks.detach()))


def test_periodic_conv_is_the_circular_convolution_of_its_kernel() -> None:
    """``z[c, i, j] = sum K[c, c', a, b] x[c', i - a, j - b]`` with offsets ``a, b`` in ``-k//2 .. k//2``,
    by brute force on a non-square image; a fresh kernel is the identity."""
    torch.manual_seed(0)
    c, h, w, k = 2, 4, 5, 3
    layer = PeriodicConv(c, k).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], x)
    perturb(layer)
    kernel = layer.kernel.detach()
    expected = torch.zeros_like(x)
    for a in range(k):
        for b in range(k):
            shifted = torch.roll(x, shifts=(a - k // 2, b - k // 2), dims=(2, 3))  # shifted[i, j] = x[i - a', j - b']
            expected += torch.einsum("oc,nchw->nohw", kernel[:, :, a, b], shifted)
    torch.testing.assert_close(layer(x)[0], expected)


# ---------------------------------------------------------------- reshapes and priors


def test_squeeze_puts_pixel_f_i_plus_a_f_j_plus_b_into_channel_c_f2_plus_a_f_plus_b() -> None:
    f, c, h, w = 2, 2, 4, 6
    x = torch.randn(1, c, h, w)
    z, _ = Squeeze(f)(x)
    for ch in range(c):
        for a in range(f):
            for b in range(f):
                torch.testing.assert_close(z[0, ch * f * f + a * f + b], x[0, ch, a::f, b::f])
    torch.testing.assert_close(Squeeze(f).inverse(z)[0], x)


def test_factor_out_prior_reads_the_kept_half_before_the_inner_transform() -> None:
    """``e2 = (x2 - mu(x1)) exp(-log_sigma(x1))``: Glow's ``split2d`` conditions on ``x1`` as it enters the next
    scale, not on that scale's latent."""
    torch.manual_seed(0)
    inner = LUConv1x1(2, seed=1).double()
    layer = FactorOut(4, 2, inner, prior="conditional").double()
    perturb(layer)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    z, ladj = layer(x)
    h = layer.prior(x[:, :2])
    mu, log_sigma = h[:, 0::2], h[:, 1::2]
    torch.testing.assert_close(z[:, 2:], (x[:, 2:] - mu) * torch.exp(-log_sigma))
    torch.testing.assert_close(z[:, :2], inner(x[:, :2])[0])
    torch.testing.assert_close(ladj, inner(x[:, :2])[1] - log_sigma.sum((1, 2, 3)))


def test_affine_prior_context_shifts_mean_and_log_scale() -> None:
    torch.manual_seed(0)
    prior = AffinePrior((2, 1, 1), context_features=3).double()
    perturb(prior)
    y = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    shift = prior.from_context(y).view(4, 2, 2, 1, 1)
    loc, log_scale = prior.loc + shift[:, 0], prior.log_scale + shift[:, 1]
    z, ladj = prior(x, y)
    torch.testing.assert_close(z, (x - loc) * torch.exp(-log_scale))
    torch.testing.assert_close(ladj, -9 * log_scale.sum((1, 2, 3)))


# ---------------------------------------------------------------- logit preprocessing


def test_logit_squeezes_symmetrically_into_alpha_one_minus_alpha() -> None:
    alpha = 0.05
    z, ladj = Logit(alpha)(torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64))
    logit = math.log(alpha / (1 - alpha))
    torch.testing.assert_close(z, torch.tensor([[logit, 0.0, -logit]], dtype=torch.float64))
    # dz/dx = (1 - 2 alpha) / (y (1 - y)) at y = alpha, 1/2, 1 - alpha
    slopes = torch.tensor([alpha * (1 - alpha), 0.25, alpha * (1 - alpha)], dtype=torch.float64)
    torch.testing.assert_close(ladj, (math.log(1 - 2 * alpha) - slopes.log()).sum().view(1))



def test_smooth_leaky_elu_inverse_solves_to_its_forward_and_needs_an_iteration() -> None:
    """The inverse's Newton steps: zero of them returned 0 for every negative input."""
    from invertible.transforms import SmoothLeakyELU

    x = torch.tensor([[-3.0, -0.2, 0.0, 1.5]], dtype=torch.float64)
    z, _ = SmoothLeakyELU(0.2)(x)
    torch.testing.assert_close(SmoothLeakyELU(0.2).inverse(z)[0], x)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"iterations must be a positive integer, got {bad!r}"):
            SmoothLeakyELU(0.2, iterations=bad)
    assert SmoothLeakyELU(0.2, iterations=np.int64(3)).iterations == 3  # numpy's integers too


# ---------------------------------------------------------------- dequantization


def test_variational_noise_depends_on_the_image_at_every_pixel() -> None:
    """The noise flow's checkerboard couplings alternate parity, so every pixel's noise is conditioned on ``x``
    (couplings of one parity would leave half of the pixels with noise independent of the image)."""
    torch.manual_seed(0)
    deq = VariationalDequantization(5, (1, 4, 4), steps=2, hidden=4).double().eval()
    perturb(deq)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    noise = []
    for image in (x, x + 4):
        torch.manual_seed(1)  # the same draw of e for both images
        y, _ = deq(image)
        noise.append(5 * y - image)
    assert (noise[0] != noise[1]).all()
