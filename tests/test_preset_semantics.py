"""The presets' layer sequences, which the property suite sees only as some bijection: alternating masks so every
feature is transformed, the papers' base distributions and scale functions, ActNorm where asked, the priors of Glow."""

from __future__ import annotations

import math

import pytest
import torch

from invertible.models import Glow, build
from invertible.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineImageCoupling,
    AffinePrior,
    ElementwiseAffine,
    FactorOut,
    ReversePermutation,
)

LOG_SIGMOID_2 = math.log(1 / (1 + math.exp(-2.0)))


def _transformed_sets(layers, x: torch.Tensor) -> list[torch.Tensor]:
    """For each coupling, with its parameters perturbed, which entries of its input it changes."""
    moved = []
    for layer in layers:
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.5 * torch.randn_like(p))
            moved.append((layer(x)[0] != x).any(0))
    return moved


@pytest.mark.parametrize("name", ["nice", "realnvp"])
def test_vector_couplings_alternate_and_transform_every_feature(name: str) -> None:
    torch.manual_seed(0)
    flow = build(name, features=5, layers=3, hidden=[8]).double()
    couplings = [t for t in flow.transform.transforms if not isinstance(t, ElementwiseAffine)]
    moved = _transformed_sets(couplings, torch.randn(16, 5, dtype=torch.float64))
    for first, second in zip(moved, moved[1:]):
        assert torch.equal(second, ~first)
    assert moved[0].tolist() == [False, True, False, True, False]


def test_nice_image_couplings_alternate_odd_and_even_pixels() -> None:
    torch.manual_seed(0)
    flow = build("nice", event_shape=[1, 2, 4], layers=2, hidden=[8]).double()
    couplings = [t for t in flow.transform.transforms if isinstance(t, AdditiveCoupling)]
    moved = _transformed_sets(couplings, torch.randn(16, 8, dtype=torch.float64))
    assert torch.equal(moved[1], ~moved[0])


def test_nice_refuses_images_of_one_value_as_it_refuses_one_feature() -> None:
    """1x1 grey images gave "mask must be a 1-D boolean vector with both True (identity) and False (transformed)
    entries", a message about a mask the user never gave."""
    with pytest.raises(ValueError, match=r"^coupling flows need at least 2 values per image, got images of shape "
                                         r"\(1, 1, 1\)$"):
        build("nice", event_shape=(1, 1, 1))
    with pytest.raises(ValueError, match=r"^coupling flows need at least 2 features, got 1$"):
        build("nice", features=1)
    assert build("nice", event_shape=(2, 1, 1), layers=2, hidden=[4]).log_prob(torch.randn(3, 2, 1, 1)).shape == (3,)


def test_realnvp_image_couplings_alternate_their_masks() -> None:
    """Each scale alternates checkerboard parities and then channel parities (Dinh et al. 2017, Section 4.1)."""
    torch.manual_seed(0)
    flow = build("realnvp", event_shape=[1, 4, 4], levels=2, hidden_channels=4, blocks=1)
    couplings = [m for m in flow.modules() if isinstance(m, AffineImageCoupling)]
    kinds = [(m.mask_type, m.parity if m.mask_type == "channel" else int(not m.mask[0, 0, 0])) for m in couplings]
    assert kinds == [
        ("checkerboard", 0), ("checkerboard", 1), ("checkerboard", 0),
        ("channel", 0), ("channel", 1), ("channel", 0),
        ("checkerboard", 0), ("checkerboard", 1), ("checkerboard", 0), ("checkerboard", 1),
    ]  # fmt: skip


def test_nice_starts_as_the_identity_with_a_standard_logistic_prior() -> None:
    """Zero-initialised couplings and a unit scaling layer: ``log p(x) = sum_i log p_logistic(x_i)``, whose density at 0
    is 1/4; the scaling layer has no shift (``z = exp(s) * h``)."""
    flow = build("nice", features=4, layers=2, hidden=[8]).double()
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    expected = (-x - 2 * torch.log1p(torch.exp(-x))).sum(1)
    torch.testing.assert_close(flow.log_prob(x), expected)
    torch.testing.assert_close(expected[0], torch.tensor(4 * math.log(0.25), dtype=torch.float64))
    scaling = flow.transform.transforms[-1]
    assert isinstance(scaling, ElementwiseAffine) and scaling.shift is None


def test_realnvp_scale_option_reaches_every_coupling() -> None:
    """A fresh RealNVP with Glow's sigmoid scale: each of 3 couplings scales its 2 transformed features by sigmoid(2)."""
    x = torch.randn(3, 4, dtype=torch.float64)
    _, ladj = build("realnvp", features=4, layers=3, hidden=[8], scale="sigmoid").double().transform(x)
    torch.testing.assert_close(ladj, torch.full((3,), 6 * LOG_SIGMOID_2, dtype=torch.float64))
    _, ladj = build("realnvp", features=4, layers=3, hidden=[8], scale="exp").double().transform(x)
    torch.testing.assert_close(ladj, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("shape", [[4], [1, 4, 4]], ids=["vector", "image"])
def test_realnvp_actnorm_standardises_on_the_first_training_pass(shape: list[int]) -> None:
    """Couplings start as the identity, so with ActNorm the first pass maps the batch to zero mean and unit variance."""
    torch.manual_seed(0)
    options = dict(features=4, layers=2, hidden=[8]) if len(shape) == 1 else dict(event_shape=shape, levels=2, hidden_channels=4, blocks=1)
    x = 5.0 + 3.0 * torch.randn(256, *shape, dtype=torch.float64)
    for actnorm in (False, True):
        flow = build("realnvp", actnorm=actnorm, **options).double()
        z, _ = flow.transform(x)
        if actnorm:
            torch.testing.assert_close(z.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-6, rtol=0)
            torch.testing.assert_close(z.std(unbiased=False), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)
        else:
            torch.testing.assert_close(z.mean(), x.mean())  # a permutation of x: couplings and squeezes only


def test_fresh_glow_log_det_is_the_sigmoid_scales_of_its_couplings() -> None:
    """At initialisation (evaluation mode, ActNorm not yet initialised) only the couplings' ``sigmoid(2)`` scales move
    volume: 2 levels of one step on (1, 4, 4) transform 2 x 2 x 2 then 4 x 1 x 1 elements."""
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    glow = Glow((1, 4, 4), levels=2, steps=1, hidden=4).double().eval()
    tol = dict(atol=1e-5, rtol=0)  # the LU factors of the starting rotation were computed in float32
    torch.testing.assert_close(glow.transform(x)[1], torch.full((3,), 12 * LOG_SIGMOID_2, dtype=torch.float64), **tol)
    glow = Glow((1, 4, 4), levels=2, steps=1, hidden=4, scale="exp").double().eval()
    torch.testing.assert_close(glow.transform(x)[1], torch.zeros(3, dtype=torch.float64), **tol)


def _top_priors(flow: Glow) -> list[tuple[int, ...]]:
    split = {id(m.prior) for m in flow.modules() if isinstance(m, FactorOut)}
    return [m.event_shape for m in flow.modules() if isinstance(m, AffinePrior) and id(m) not in split]


def test_glow_steps_and_top_priors() -> None:
    """Every step is ActNorm, permutation, coupling; the top prior is per channel, per element (Glow's ``learntop``)
    or absent (fixed)."""
    glow = Glow((1, 8, 8), levels=3, steps=2, hidden=4, permutation="reverse")
    assert sum(isinstance(m, ActNorm) for m in glow.modules()) == 6
    assert sum(isinstance(m, ReversePermutation) for m in glow.modules()) == 6
    # (1, 8, 8), 2 levels: the last level works on 8 channels of 2 x 2 pixels
    assert _top_priors(Glow((1, 8, 8), levels=2, steps=1, hidden=4, prior="channel")) == [(8, 1, 1)]
    assert _top_priors(Glow((1, 8, 8), levels=2, steps=1, hidden=4, prior="conditional")) == [(8, 2, 2)]
    assert _top_priors(Glow((1, 8, 8), levels=2, steps=1, hidden=4, prior="fixed")) == []


@pytest.mark.parametrize("prior", ["channel", "conditional"])
def test_glow_split_priors_read_the_label(prior: str) -> None:
    """A fresh Glow ignores its context (zero-initialised networks); perturbing only the split priors makes the
    likelihood depend on the label."""
    torch.manual_seed(0)
    glow = Glow((1, 4, 4), context_features=3, levels=2, steps=1, hidden=4, prior=prior).double().eval()
    x, y = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[[0, 1]]
    torch.testing.assert_close(glow.log_prob(x, y), glow.log_prob(x, y.flip(0)))
    with torch.no_grad():
        for split in (m for m in glow.modules() if isinstance(m, FactorOut)):
            for p in split.prior.parameters():
                p.add_(0.5 * torch.randn_like(p))
    assert not torch.allclose(glow.log_prob(x, y), glow.log_prob(x, y.flip(0)))
