"""Convolutional conditioners: the matrix form of small-image convolutions computes the convolution."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invertible.nets import ConvResNet, GlowConvNet
from invertible.nets.conv import _shift_matrices, conv_matrix, small_image_conv


@pytest.mark.parametrize("height,width,kernel", [(1, 1, 3), (2, 2, 3), (2, 3, 3), (3, 3, 3), (4, 4, 3), (3, 5, 5)])
@pytest.mark.parametrize("last_in,last_out", [(False, False), (True, False), (False, True), (True, True)])
def test_conv_matrix_is_the_same_padded_convolution(height: int, width: int, kernel: int, last_in: bool, last_out: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel, padding=kernel // 2).double()
    x = torch.randn(4, 3, height, width, dtype=torch.float64)
    flat = (x.permute(0, 2, 3, 1) if last_in else x).reshape(4, -1)
    out = small_image_conv(flat, conv, height, width, channels_last_in=last_in, channels_last_out=last_out)
    expected = conv(x)
    expected = (expected.permute(0, 2, 3, 1) if last_out else expected).reshape(4, -1)
    torch.testing.assert_close(out, expected)
    # the matrix carries the weight's gradient like the convolution does
    (g,) = torch.autograd.grad(out.square().sum(), conv.weight)
    (g_ref,) = torch.autograd.grad(conv(x).square().sum(), conv.weight)
    torch.testing.assert_close(g, g_ref)
    assert conv_matrix(conv.weight, height, width).shape == (5 * height * width, 3 * height * width)


def _convolution_path(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's output computed by its convolution layers (the path taken for larger images)."""
    if isinstance(net, GlowConvNet):
        return net.net(x)
    h = net.blocks(net.head(x))
    return net.out(F.relu(h))


@pytest.mark.parametrize("make", [lambda: GlowConvNet(3, 4, 6, output_gain=True), lambda: ConvResNet(3, 4, 6, blocks=2)])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 4), (3, 3), (4, 4)])
def test_small_image_forward_matches_the_convolutions(make, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    net = make().double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))  # the output layer starts at zero
    x = torch.randn(5, 3, *size, dtype=torch.float64)
    out = net._small_image_forward(x)  # the matrix form, whatever the size
    assert out.shape == (5, 4, *size)
    torch.testing.assert_close(out, _convolution_path(net, x))
    torch.testing.assert_close(net(x), out)  # the path the network picks computes the same


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (2, 3, 3, 1)])
def test_conv_matrix_refuses_kernels_without_a_centre(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="square kernel of odd size"):
        conv_matrix(torch.zeros(shape), 4, 4)


def test_a_small_image_pass_under_inference_mode_leaves_later_training_its_gradients() -> None:
    """The shift matrices are cached for the process: made first inside ``torch.inference_mode``, they are
    normal tensors, so a network trained afterwards (another model included) still backpropagates."""
    _shift_matrices.cache_clear()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    with torch.inference_mode():
        GlowConvNet(3, 4, 6).double()(x)
    net = GlowConvNet(3, 4, 6).double()
    net(x).square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_the_conv_matrix_compiles_without_the_cache_warning() -> None:
    """Under ``torch.compile`` the shift matrices are built in the graph, not looked up in the process-wide cache
    that Dynamo skips with a warning ("Dynamo detected a call to a functools.lru_cache-wrapped function")."""
    weight = torch.randn(3, 2, 3, 3)
    fn = torch.compile(lambda w: conv_matrix(w, 2, 2), backend="eager", fullgraph=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fn(weight)
    torch.testing.assert_close(got, conv_matrix(weight, 2, 2))
    assert not [w for w in caught if "lru_cache" in str(w.message)], [str(w.message) for w in caught]
