"""Hand-assembled flows that do not fit together fail at the first call (or at construction) with a
``ValueError`` naming the layer and the shapes, not a shape error from deep inside torch.

Pinned here: a layer built for other features, inside a :class:`Compose` (nested too, and under
:class:`Inverse`) or as a flow's whole transform, is a :class:`LayerError` locating it, in both directions;
a conditioned layer given no context, or one of another width, says the width its conditioner takes; a
transform that changes the event shape away from the base's is refused at the first call; ``Squeeze`` and
``Reshape`` refuse inputs of other shapes; ``Flow`` and ``Inverse`` refuse non-transforms; elementwise and
per-channel layers refuse events their parameters would broadcast over, and so do image couplings, ``FactorOut``,
couplings of general masks, planar, radial and Sylvester layers and 1x1 convolutions; a :class:`LayerError`
pickles (a process pool sends it back to its caller).
"""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch

from invertible import Compose, Flow, Inverse, LayerError
from invertible import transforms as T
from invertible.distributions import DiagonalNormal, StandardNormal


@pytest.mark.parametrize(
    "layer",
    [
        lambda: T.AffineCoupling(T.alternating_mask(4)),
        lambda: T.MaskedAffineAutoregressive(4),
        lambda: T.LULinear(4),
        lambda: T.ActNorm(4),
        lambda: T.RQSCoupling(T.alternating_mask(4)),
        lambda: T.Planar(4),
        lambda: T.Sylvester(4),
    ],
)
def test_a_layer_built_for_other_features_is_named_with_the_input_shape(layer):
    made = layer()
    flow = Flow(Compose([T.ReversePermutation(3), made]), StandardNormal(3))
    name = type(made).__name__
    with pytest.raises(LayerError, match=rf"step 1 \({name}\) failed in forward on an input of shape \(5, 3\)"):
        flow.log_prob(torch.randn(5, 3))
    with pytest.raises(LayerError, match=rf"step 1 \({name}\) failed in inverse on an input of shape \(2, 3\)"):
        flow.sample(2)


def test_nested_and_inverted_steps_are_located_by_their_path():
    inner = Compose([T.ElementwiseAffine(3), T.AffineCoupling(T.alternating_mask(4))])
    t = Compose([T.ReversePermutation(3), Inverse(inner)])
    with pytest.raises(LayerError, match=r"step 1 \(Inverse\(Compose\)\) > step 1 \(AffineCoupling\) failed in "
                                         r"inverse on an input of shape \(5, 3\) and no context") as e:
        t(torch.randn(5, 3))
    # the layer's own shape check is the cause
    assert isinstance(e.value.__cause__, ValueError) and not isinstance(e.value.__cause__, LayerError)


def test_a_flow_of_one_misfit_layer_names_it():
    flow = Flow(T.LULinear(4), StandardNormal(3))
    with pytest.raises(LayerError, match=r"the flow's transform \(LULinear\) failed in forward on an input of shape"):
        flow.log_prob(torch.randn(5, 3))


def test_errors_that_are_not_about_the_input_pass_through():
    class Unfinished(T.Transform):
        def forward(self, x, context=None):
            raise NotImplementedError("no closed form")

    with pytest.raises(NotImplementedError, match="no closed form"):
        Compose([Unfinished()])(torch.randn(2, 3))


@pytest.mark.parametrize("given", [None, 5])
@pytest.mark.parametrize(
    ("layer", "net"),
    [
        (lambda: T.AffineCoupling(T.alternating_mask(3), context_features=3), r"conditioner \(MLP\)"),
        (lambda: T.MaskedAffineAutoregressive(3, context_features=3), r"net \(MaskedMLP\)"),
        (lambda: T.Planar(3, context_features=3), r"params \(ContextParameters\)"),
    ],
)
def test_a_layer_given_no_context_or_one_of_another_width_names_the_width_it_takes(layer, net, given):
    flow = Flow(Compose([T.ReversePermutation(3), layer()]), StandardNormal(3), context_features=given)
    context = None if given is None else torch.randn(4, given)
    got = "no context" if given is None else r"a context of shape \(4, 5\)"
    with pytest.raises(LayerError, match=rf"step 1 .*input of shape \(4, 3\) and {got} \(its {net} takes a context "
                                         r"of shape \(batch, 3\)\)"):
        flow.log_prob(torch.randn(4, 3), context)
    fits = Flow(Compose([T.ReversePermutation(3), layer()]), StandardNormal(3), context_features=3)
    assert fits.log_prob(torch.randn(4, 3), torch.randn(4, 3)).shape == (4,)


def test_an_image_context_of_the_right_channels_gets_no_hint_about_its_width():
    """The hint compared an image context's last dimension (its width in pixels) with the conditioner's channels:
    a float64 noise flow given float32 pixels blamed "a context of shape (batch, 1)" for a dtype error."""
    deq = T.VariationalDequantization(4, (1, 2, 2), steps=1, hidden=4).double()
    with pytest.raises(LayerError, match=r"of shape \(3, 1, 2, 2\): RuntimeError: .*dtype") as e:
        deq(torch.randint(0, 4, (3, 1, 2, 2)).float())
    assert "takes a context" not in str(e.value)
    coupling = T.AffineImageCoupling((1, 2, 2), "checkerboard", hidden=4, context_features=2)
    with pytest.raises(LayerError, match=r"its net \(GlowConvNet\) takes a context of shape \(batch, 2\)"):
        Compose([coupling])(torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2))


def test_a_layer_built_for_other_features_says_how_many():
    t = Compose([T.AffineCoupling(T.alternating_mask(4))])
    built = r"\(it was built for 4 features, shape \(batch, 4\)\)"
    with pytest.raises(LayerError, match=rf"shape \(5, 3\) and no context {built}"):
        t(torch.randn(5, 3))


@pytest.mark.parametrize("base", [StandardNormal((1, 4, 4)), DiagonalNormal((1, 4, 4))])
def test_a_transform_that_changes_the_event_shape_is_refused(base):
    flow = Flow(Compose([T.Squeeze()]), base)
    with pytest.raises(ValueError, match=r"maps \(1, 4, 4\) events to \(4, 2, 2\) in forward.*is \(1, 4, 4\)"):
        flow.log_prob(torch.randn(2, 1, 4, 4))
    fine = Flow(Compose([T.Squeeze(), T.ActNorm(4), Inverse(T.Squeeze())]), base)
    assert fine.log_prob(torch.randn(2, 1, 4, 4)).shape == (2,)
    flat = Flow(Compose([T.Reshape((1, 4, 4), (16,))]), StandardNormal(16))
    with pytest.raises(ValueError, match=r"maps \(16,\) events to \(1, 4, 4\) in inverse.*is \(16,\)"):
        flat.sample(2)


@pytest.mark.parametrize("shape", [(5, 3), (1, 4, 4)])
def test_squeeze_refuses_what_is_not_a_batch_of_images(shape):
    got = re.escape(f"got shape {shape}")
    with pytest.raises(ValueError, match=rf"Squeeze takes a batch of images \(batch, C, H, W\), {got}"):
        T.Squeeze()(torch.randn(shape))
    with pytest.raises(ValueError, match=rf"inverse \(depth-to-space\) takes a batch of images .*{got}"):
        T.Squeeze().inverse(torch.randn(shape))


def test_reshape_refuses_events_of_another_shape_with_as_many_values():
    r = T.Reshape((1, 2, 8), (16,))
    with pytest.raises(ValueError, match=r"takes \(batch, 1, 2, 8\), got shape \(3, 1, 4, 4\)"):
        r(torch.randn(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"inverse takes \(batch, 16\), got shape \(3, 4, 4\)"):
        r.inverse(torch.randn(3, 4, 4))


def test_flow_and_inverse_refuse_what_is_not_a_transform():
    with pytest.raises(TypeError, match="transform must be a Transform.*got Linear"):
        Flow(torch.nn.Linear(2, 2), StandardNormal(2))
    with pytest.raises(TypeError, match="base must be a distribution module.*got Normal"):
        Flow(T.LULinear(2), torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="Inverse takes a Transform, got Linear"):
        Inverse(torch.nn.Linear(2, 2))


def test_a_step_given_what_is_not_a_tensor_is_named_with_its_type():
    with pytest.raises(LayerError, match=r"step 0 \(LULinear\) failed in forward on an input of shape \(2, 3\) and a "
                                         r"context of shape list"):
        Compose([T.LULinear(4)])(torch.randn(2, 3), [1.0, 2.0])


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: T.ElementwiseAffine(1), (4, 5)),  # one log-scale would scale all 5 features, counted once
        (lambda: T.ElementwiseAffine(3), (4, 3, 2, 3)),  # per-channel intent, broadcast along the width
        (lambda: T.ElementwiseAffine(5), (4, 1)),  # would widen the events to 5 features
        (lambda: T.DiagonalLinear(1), (4, 5)),
        (lambda: T.DiagonalLinear(3), (4, 2, 3)),
        (lambda: T.ActNorm(1), (4, 5)),
        (lambda: T.ActNorm(1), (4, 3, 2, 2)),
        (lambda: T.BatchNorm(1), (4, 5)),
        (lambda: T.BatchNorm(1), (4, 3, 2, 2)),
        # one transformed channel (or one factored-out channel's prior) would broadcast over the extra ones
        (lambda: T.AffineImageCoupling((3, 8, 8), "channel", hidden=4), (2, 12, 4, 4)),  # the shape before Squeeze
        (lambda: T.AdditiveImageCoupling((2, 4, 4), "channel", hidden=4), (2, 3, 4, 4)),
        (lambda: T.FactorOut(3, 2, T.ActNorm(2), prior="channel"), (2, 5, 4, 4)),
        (lambda: T.FactorOut(3, 2, T.ActNorm(2), prior="conditional"), (2, 5, 4, 4)),
        # a mask that is neither interleaved nor two blocks gathers its features and would drop the sixth
        (lambda: T.AffineCoupling(torch.tensor([True, False, False, True, False]), hidden=(4,)), (4, 6)),
        (lambda: T.RQSCoupling(torch.tensor([True, False, False, True, False]), hidden=(4,)), (4, 6)),
        (lambda: T.Planar(3), (4, 1)),  # would widen the events to 3 features
        (lambda: T.Radial(3), (4, 1)),
        (lambda: T.Sylvester(3), (4, 6)),  # a reshape to (-1, 3) would make 8 events of 4
        (lambda: T.Conv1x1(2), (2, 2, 2, 2, 3)),  # every voxel mapped, only H x W of them counted
        (lambda: T.LUConv1x1(2), (2, 2, 2, 2, 3)),
        (lambda: T.PeriodicConv(2), (2, 3, 4, 4)),  # a wrong channel count failed inside a batched product
        (lambda: T.PeriodicConv(2), (2, 2, 4)),
        # a matrix would map each row of 4, its log-det counted once per event
        (lambda: T.LULinear(4), (3, 2, 4)),
        (lambda: T.FullLinear(4), (3, 2, 4)),
        (lambda: T.TriangularLinear(4), (3, 2, 4)),
        (lambda: T.BlockDiagonalLinear(4, 2), (3, 4, 1)),  # came back flattened to (3, 4)
    ],
)
def test_a_layer_whose_parameters_would_broadcast_over_other_events_refuses_them(layer, shape):
    """Elementwise and per-channel layers built for other features refuse the input in both directions (in
    evaluation mode, where nothing of theirs depends on the batch), instead of broadcasting their parameters over
    it with a log-det that counts each parameter once."""
    made = layer().eval()
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.3)
    x = torch.randn(shape)
    name = type(made).__name__
    for direction in (made, made.inverse):
        with pytest.raises(ValueError, match=rf"{name} .*got shape {re.escape(str(shape))}"):
            direction(x)
    flow = Flow(Compose([made]), StandardNormal(shape[1:]))
    with pytest.raises(LayerError, match=rf"step 0 \({name}\) failed in forward on an input of shape"):
        flow.log_prob(x)


@pytest.mark.parametrize("layer", [T.MaskedAffineAutoregressive, T.InverseAutoregressiveAffine,
                                   T.MaskedRQSAutoregressive])
@pytest.mark.parametrize("width", [2, 5])
def test_an_autoregressive_layer_refuses_another_width_in_both_directions(layer, width):
    """The sequential direction (MAF's and the spline's inverse, IAF's forward) fills in the layer's ``D`` columns
    one at a time and read no others: an input of 5 features came back as 3, without an error."""
    made = layer(3)
    x = torch.randn(4, width)
    for direction in (made, made.inverse):
        with pytest.raises(ValueError, match=rf"{layer.__name__} expected a batch of events \(batch, 3\), got shape \(4, {width}\)"):
            direction(x)


def test_a_layer_error_survives_pickling_and_copying():
    """A process pool pickles the error of a worker back to its caller: an exception whose ``__init__`` takes other
    arguments than its ``args`` does not unpickle, and the pool then reports only a broken pool."""
    with pytest.raises(LayerError) as e:
        Compose([T.ReversePermutation(3), T.ActNorm(2)])(torch.randn(4, 3))
    path = list(e.value.path)
    for copied in (pickle.loads(pickle.dumps(e.value)), copy.copy(e.value), copy.deepcopy(e.value)):
        assert type(copied) is LayerError and str(copied) == str(e.value) and copied.path == path
    unpickled = pickle.loads(pickle.dumps(e.value))
    assert str(unpickled.within("step 7 (Compose)")).startswith(f"step 7 (Compose) > {path[0]} failed in forward")
