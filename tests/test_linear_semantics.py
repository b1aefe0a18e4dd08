"""The linear and permutation layers against dense matrices and explicit index maps built here.

- ``LULinear``: ``W = P L U`` from its factors (unit lower ``L``, upper ``U`` with diagonal ``sign(s) exp(log|s|)``),
  the seeded rotation it starts at, ``z = W x + b``, ``log|det W|`` and the inverse, against dense linear algebra;
- ``FullLinear``, ``DiagonalLinear``, ``TriangularLinear`` (lower and upper) and ``BlockDiagonalLinear`` likewise, with
  their starting points (seeded rotations, one per block; the identity) and the block size check;
- ``Permutation``: ``z[:, i] = x[:, perm[i]]`` and its inverse by explicit loops, on vectors and on image channels;
  ``ReversePermutation`` and ``RandomPermutation`` (the seed's ``randperm``); what ``Permutation`` refuses.
"""

from __future__ import annotations

import pytest
import torch

from invertible.seeding import part_seeds
from invertible.transforms import (
    BlockDiagonalLinear,
    DiagonalLinear,
    FullLinear,
    LULinear,
    Permutation,
    RandomPermutation,
    ReversePermutation,
    TriangularLinear,
)

from .perturb import perturb

D = 5


def _rotation(features: int, seed: int) -> torch.Tensor:
    """The ``Q`` of the QR factorisation of a seeded standard normal matrix."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(features, features, generator=g))[0]


def _check_affine(layer, weight: torch.Tensor, bias: torch.Tensor, features: int = D) -> None:
    """``z = W x + b`` row by row, ``log|det W|`` both ways, and ``x = W^{-1} (z - b)``."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, features, generator=g, dtype=torch.float64)
    expected = torch.stack([weight @ row + bias for row in x])
    logdet = torch.linalg.slogdet(weight)[1]
    z, ladj = layer(x)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(ladj, logdet.expand(4))
    z = torch.randn(4, features, generator=g, dtype=torch.float64)
    back, ladj_inv = layer.inverse(z)
    torch.testing.assert_close(back, torch.linalg.solve(weight, (z - bias).T).T)
    torch.testing.assert_close(ladj_inv, -logdet.expand(4))


def test_lu_linear_starts_at_its_seeds_rotation() -> None:
    for seed in (0, 3):
        torch.testing.assert_close(LULinear(D, seed=seed).weight(), _rotation(D, seed), atol=1e-5, rtol=0)


def test_lu_linear_is_p_l_u_of_its_factors() -> None:
    layer = LULinear(D, seed=1).double()
    perturb(layer, 0.5)
    p = layer.permutation
    assert torch.equal(p @ p.T, torch.eye(D, dtype=p.dtype)) and not torch.equal(p, torch.eye(D, dtype=p.dtype))
    lower = torch.tril(layer.lower.detach(), -1) + torch.eye(D, dtype=torch.float64)
    diagonal = layer.sign_s * layer.log_abs_s.detach().exp()
    upper = torch.triu(layer.upper.detach(), 1) + torch.diag(diagonal)
    weight = p @ lower @ upper
    torch.testing.assert_close(layer.weight().detach(), weight)
    torch.testing.assert_close(torch.linalg.slogdet(weight)[1], layer.log_abs_s.detach().sum())
    with torch.no_grad():
        _check_affine(layer, weight, layer.bias.detach())


def test_full_linear_starts_at_its_seeds_rotation_and_is_w_x_plus_b() -> None:
    torch.testing.assert_close(FullLinear(D, seed=2).weight.detach(), _rotation(D, 2))
    layer = FullLinear(D, seed=2).double()
    perturb(layer, 0.5)
    with torch.no_grad():
        _check_affine(layer, layer.weight.detach(), layer.bias.detach())


def test_diagonal_linear_is_exp_s_times_x_plus_b() -> None:
    layer = DiagonalLinear(D).double()
    perturb(layer, 0.7)
    with torch.no_grad():
        _check_affine(layer, torch.diag(layer.log_scale.detach().exp()), layer.bias.detach())


@pytest.mark.parametrize("lower", [True, False], ids=["lower", "upper"])
def test_triangular_linear_is_its_triangle_with_exp_s_on_the_diagonal(lower: bool) -> None:
    fresh = TriangularLinear(D, lower=lower).double()
    x = torch.randn(3, D, dtype=torch.float64)
    assert torch.equal(fresh(x)[0], x)  # starts at the identity
    layer = TriangularLinear(D, lower=lower).double()
    perturb(layer, 0.5)
    off = layer.off_diagonal.detach()
    triangle = torch.tril(off, -1) if lower else torch.triu(off, 1)
    weight = triangle + torch.diag(layer.log_diagonal.detach().exp())
    torch.testing.assert_close(layer.matrix().detach(), weight)
    with torch.no_grad():
        _check_affine(layer, weight, layer.bias.detach())


def test_block_diagonal_linear_is_its_dense_block_diagonal_matrix() -> None:
    fresh = BlockDiagonalLinear(6, 2, seed=4)
    for block, seed in zip(fresh.blocks.detach(), part_seeds(4, 3)):
        torch.testing.assert_close(block, _rotation(2, seed))
    layer = BlockDiagonalLinear(6, 3).double()
    perturb(layer, 0.5)
    layer.train()  # the inference caches stay out of it
    with torch.no_grad():
        _check_affine(layer, torch.block_diag(*layer.blocks.detach()), layer.bias.detach(), features=6)


def test_triangular_linear_inverse_refuses_another_dtype() -> None:
    with pytest.raises(ValueError, match="TriangularLinear holds torch.float32 parameters and got torch.float64"):
        TriangularLinear(3).inverse(torch.randn(2, 3, dtype=torch.float64))


def test_block_size_must_divide_the_features() -> None:
    with pytest.raises(ValueError, match="block_size must divide features=6, got 4"):
        BlockDiagonalLinear(6, 4)


# ---------------------------------------------------------------- permutations


def _permute(x: torch.Tensor, perm: list[int]) -> torch.Tensor:
    return torch.stack([x[:, p] for p in perm], 1)


def _unpermute(z: torch.Tensor, perm: list[int]) -> torch.Tensor:
    x = torch.empty_like(z)
    for i, p in enumerate(perm):
        x[:, p] = z[:, i]
    return x


@pytest.mark.parametrize("shape", [(4,), (4, 2, 3)], ids=["vector", "image"])
def test_permutation_moves_feature_perm_i_to_position_i(shape) -> None:
    perm = [2, 3, 1, 0]  # not its own inverse
    layer = Permutation(torch.tensor(perm))
    x = torch.randn(3, *shape)
    z, ladj = layer(x)
    assert torch.equal(z, _permute(x, perm)) and torch.equal(ladj, torch.zeros(3))
    back, ladj_inv = layer.inverse(x)
    assert torch.equal(back, _unpermute(x, perm)) and torch.equal(ladj_inv, torch.zeros(3))


def test_reverse_and_random_permutations() -> None:
    x = torch.randn(2, D)
    assert torch.equal(ReversePermutation(D)(x)[0], x[:, [D - 1 - i for i in range(D)]])
    for seed in (0, 5):
        g = torch.Generator().manual_seed(seed)
        expected = torch.randperm(8, generator=g)
        assert torch.equal(RandomPermutation(8, seed=seed).perm, expected)
    assert not torch.equal(RandomPermutation(8, seed=0).perm, RandomPermutation(8, seed=5).perm)


@pytest.mark.parametrize("perm", [[0, 0, 2], [1, 2, 3], [[0, 1], [1, 0]], 0], ids=["repeated", "out_of_range", "matrix", "scalar"])
def test_permutation_refuses_what_is_not_a_permutation(perm) -> None:
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0..n-1 \(a 1-D list of indices\), got "):
        Permutation(torch.tensor(perm))


@pytest.mark.parametrize("width", [2, 4])
def test_permutation_refuses_the_wrong_number_of_features_both_ways(width: int) -> None:
    layer = Permutation(torch.tensor([2, 0, 1]))
    for direction in (layer, layer.inverse):
        expected = rf"expected a batch with 3 features/channels in dimension 1, got shape \(2, {width}\)"
        with pytest.raises(ValueError, match=expected):
            direction(torch.zeros(2, width))


def test_permutation_refuses_a_single_vector_without_its_batch_dimension() -> None:
    layer = Permutation(torch.tensor([2, 0, 1]))
    for direction in (layer, layer.inverse):
        with pytest.raises(ValueError, match=r"got shape \(3,\)"):
            direction(torch.zeros(3))


def test_permutation_refuses_fractional_indices_rather_than_truncating_them() -> None:
    with pytest.raises(ValueError, match=r"perm must hold integers, got \[0.7, 1.2, 2.9"):
        Permutation(torch.tensor([0.7, 1.2, 2.9], dtype=torch.float64))
    assert torch.equal(Permutation(torch.tensor([2.0, 0.0, 1.0])).perm, torch.tensor([2, 0, 1]))
