"""Image flows beyond the property suite: bits/dim, datasets and readers, caches, temperature, presets."""

from __future__ import annotations

import gzip
import math
import pickle
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import invertible
from invertible import Compose, Flow
from invertible.data import load
from invertible.data.images import image_preprocess
from invertible.distributions import StandardLogistic
from invertible.metrics import bits_per_dim
from invertible.models import Glow, build, rebuild
from invertible.transforms import dequantization
from invertible.transforms import (
    AdditiveImageCoupling,
    AffineImageCoupling,
    BatchNorm,
    Conv1x1,
    LUConv1x1,
    PeriodicConv,
    UniformDequantization,
    VariationalDequantization,
    channel_mask,
)


@pytest.mark.parametrize("levels", [2, 8, 17, 256])
def test_uniform_model_scores_log2_levels(levels: int) -> None:
    # several channels: the bound's -d log L counts every channel and pixel
    x = torch.randint(0, levels, (5, 3, 2, 3)).double()
    y, ladj = UniformDequantization(levels)(x)
    assert ((y >= 0) & (y < 1)).all()
    torch.testing.assert_close(bits_per_dim(ladj, (3, 2, 3)), torch.full((5,), math.log2(levels), dtype=torch.float64))
    # through the logit: a standard logistic density in logit space is uniform on (0, 1)
    pre = image_preprocess(levels, alpha=0.0).double()
    uniform = Flow(Compose(), StandardLogistic((3, 2, 3))).double()
    y, ladj = pre(x)
    torch.testing.assert_close(bits_per_dim(uniform.log_prob(y) + ladj, (3, 2, 3)), torch.full((5,), math.log2(levels), dtype=torch.float64))


class _EdgeNoise(UniformDequantization):
    """Uniform dequantization whose noise sits at the edges of the bin: 0, and the largest floats below 1."""

    def _noise(self, x, context):
        below_one = torch.nextafter(torch.ones_like(x), torch.zeros_like(x))
        edges = torch.stack([torch.zeros_like(x), below_one, torch.nextafter(below_one, torch.zeros_like(x))])
        which = (torch.arange(x.numel()).view_as(x) % 3).unsqueeze(0)
        return edges.gather(0, which).squeeze(0), x.new_zeros(x.shape[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantized_values_stay_in_their_bin_in_floating_point(dtype: torch.dtype) -> None:
    """``floor(L y) == x`` at both edges of every bin, for levels that are powers of two and levels that are not."""
    for levels in (2, 3, 7, 17, 100, 255, 256):
        x = torch.arange(levels, dtype=dtype).repeat_interleave(3).view(1, 1, 3, levels)
        layer = _EdgeNoise(levels)
        y, _ = layer(x)
        assert ((y >= 0) & (y < 1)).all()
        assert torch.equal(layer.inverse(y)[0], x), levels


class _GivenNoise(UniformDequantization):
    """Uniform dequantization whose noise is the tensor ``u`` it is given."""

    def __init__(self, levels: int, u: torch.Tensor):
        super().__init__(levels)
        self.u = u

    def _noise(self, x, context):
        return self.u, x.new_zeros(x.shape[0])


def test_dequantized_values_pass_the_gradient_of_the_noise() -> None:
    """``dy/du = 1 / L``, so the model's ``log q(y)`` trains a variational dequantizer's noise flow too."""
    torch.manual_seed(0)
    x = torch.randint(0, 5, (4, 1, 2, 2)).double()
    u = torch.rand_like(x).requires_grad_()
    y, _ = _GivenNoise(5, u)(x)
    y.sum().backward()
    torch.testing.assert_close(u.grad, torch.full_like(u, 1 / 5))
    deq = VariationalDequantization(5, (1, 2, 2), steps=2, hidden=4).double()
    y, _ = deq(x)
    y.pow(2).sum().backward()  # through y alone, not the bound's term
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in deq.noise_flow.parameters())


def _pixels_at_both_ends(levels: int, dtype: torch.dtype) -> torch.Tensor:
    """Images ``(4, 1, 2, 2)`` of pixels 0 and ``levels - 1``."""
    return torch.tensor([0.0, levels - 1.0]).repeat(8).view(4, 1, 2, 2).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_noise_lies_in_the_open_unit_interval(monkeypatch, dtype: torch.dtype) -> None:
    """``torch.rand`` returns an exact 0 once in ``2^24`` float32 draws: the noise is then the grid's smallest step
    ``eps / 2``, so a pixel 0 stays above 0 and ``Logit(alpha=0)`` finite; ordinary draws are kept bit for bit."""
    levels, step = 17, torch.finfo(dtype).eps / 2
    x = _pixels_at_both_ends(levels, dtype)
    torch.manual_seed(0)
    drawn = torch.rand_like(x)
    assert (drawn > 0).all()
    torch.manual_seed(0)
    assert torch.equal(UniformDequantization(levels)(x)[0], _GivenNoise(levels, drawn)(x)[0])

    monkeypatch.setattr(torch, "rand_like", torch.zeros_like)
    z, ladj = image_preprocess(levels, alpha=0.0)(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    y, _ = UniformDequantization(levels)(x)
    assert torch.equal(y, _GivenNoise(levels, torch.full_like(x, step))(x)[0]) and (y > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e", [-1e4, 1e4])
def test_saturated_variational_noise_lies_in_the_open_unit_interval(monkeypatch, dtype: torch.dtype, e: float) -> None:
    """Where ``sigmoid(v)`` of the noise flow is exactly 0 or 1, ``u`` is ``eps / 2`` or ``1 - eps / 2``: a pixel 0
    stays above 0, and ``Logit(alpha=0)`` of the dequantized batch is finite."""
    levels, step = 5, torch.finfo(dtype).eps / 2
    x = _pixels_at_both_ends(levels, dtype)
    pre = image_preprocess(levels, alpha=0.0, dequantization="variational", event_shape=(1, 2, 2)).to(dtype)
    deq = pre[0]
    monkeypatch.setattr(dequantization, "_row_normals", lambda t: torch.full_like(t, e))
    v, _ = deq.noise_flow.inverse(torch.full_like(x, e), deq._condition(x))
    assert (torch.sigmoid(v) == (0.0 if e < 0 else 1.0)).all()  # saturated
    z, ladj = pre(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    u, _ = deq._noise(x, None)
    assert torch.equal(u, torch.full_like(x, step if e < 0 else 1 - step))


@settings(max_examples=12, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), levels=st.integers(2, 256), size=st.floats(1e3, 1e4),
       seed=st.integers(0, 2**16))
def test_variational_inverse_log_det_is_minus_forward_log_det_at_saturated_noise(dtype: torch.dtype, levels: int,
                                                                                 size: float, seed: int) -> None:
    """``inverse(forward(x)) == (x, -ladj)`` for images with noise flow draws far in the tails (its sigmoid saturates
    to 0 or 1, or the noise is within an ulp of a bin edge): the forward's term is that of the noise ``y`` carries."""
    torch.manual_seed(seed)
    deq = VariationalDequantization(levels, (1, 2, 2), steps=2, hidden=4).to(dtype).eval()
    with torch.no_grad():
        for p in deq.noise_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randint(0, levels, (6, 1, 2, 2)).to(dtype)
    x[:2] = torch.tensor([0.0, levels - 1.0], dtype=dtype).repeat(4).view(2, 1, 2, 2)
    e = torch.randn_like(x)
    far = torch.rand_like(x) < 0.5
    far[:, 0, 0, 0] = True  # a far draw in every image
    e[far] = size * torch.sign(e[far])
    with mock.patch.object(dequantization, "_row_normals", lambda t: e.clone()):
        y, term = deq(x)
    v, _ = deq.noise_flow.inverse(e, deq._condition(x))
    assert ((torch.sigmoid(v) == 0) | (torch.sigmoid(v) == 1)).any()  # some noise saturates
    back, term_back = deq.inverse(y)
    assert torch.equal(back, x) and torch.isfinite(term).all()
    torch.testing.assert_close(term_back, -term)


def test_variational_inverse_log_det_is_minus_forward_log_det_where_y_keeps_part_of_the_noise() -> None:
    """A noise near a bin edge that ``y = (x + u) / L`` holds only in part (float64: ``u = 1.1e-14`` at pixel 112,
    where the floats are ``1.4e-14`` apart) was scored at the drawn ``u`` while ``inverse`` reads back the carried
    noise: their ``log r`` differ by the tail of ``r``, and the two terms of an image differed by 1.3 nats."""
    torch.manual_seed(0)
    deq = VariationalDequantization(256, (2, 3, 3), steps=2, hidden=4).double().eval()
    with torch.no_grad():
        for p in deq.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randint(0, 256, (200, 2, 3, 3)).double()
    torch.manual_seed(7)
    u, _ = deq._noise(x, None)
    carried = (x + u) / 256 * 256 - x
    assert ((carried - u).abs() > 0.1 * u).any()  # some noise is held only in part
    torch.manual_seed(7)
    y, term = deq(x)
    back, term_back = deq.inverse(y)
    assert torch.equal(back, x)
    torch.testing.assert_close(term_back, -term, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_variational_noise_of_a_row_does_not_depend_on_its_batch(dtype: torch.dtype) -> None:
    """Images of 36 pixels dequantized in batches of 7, 13 and 10 get the noise of one batch of 30 under the same
    seed, so an evaluation's seeded draws score each image alike at every batch size (``randn_like`` splits its
    stream by the batch size when the pixels per image are not a multiple of 16: test NLL 207.73 at batch 1,
    207.83 at batch 7, 207.23 at batch 1024 on 6x6 images)."""
    torch.manual_seed(0)
    deq = VariationalDequantization(256, (1, 6, 6), steps=2, hidden=4).to(dtype).eval()
    with torch.no_grad():
        for p in deq.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randint(0, 256, (30, 1, 6, 6)).to(dtype)
    torch.manual_seed(5)
    whole, whole_term = deq(x)
    torch.manual_seed(5)
    parts = [deq(chunk) for chunk in x.split([7, 13, 10])]
    # the same noise; the noise flow's kernels may round otherwise at another batch size (another noise: far more)
    torch.testing.assert_close(torch.cat([y for y, _ in parts]), whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([t for _, t in parts]), whole_term)


def _bin_edge_noise(dtype: torch.dtype) -> torch.Tensor:
    """``u = 1`` and the 256 floats below it (``x + u`` rounds up to ``x + 1``, for ``x < 256``, within 128 of
    them), then 0 and the 4 floats above it."""
    one, zero = torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype)
    below, above = [one], [zero]
    for _ in range(256):
        below.append(torch.nextafter(below[-1], zero))
    for _ in range(4):
        above.append(torch.nextafter(above[-1], one))
    return torch.stack(below + above)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantized_values_move_into_their_bin_no_further_than_needed(dtype: torch.dtype) -> None:
    """Every ``x`` of every ``L`` in 2..256 with ``u`` at the edges of ``[0, 1]``: ``floor(L y) == x``, and ``y`` is the
    rounded ``(x + u) / L`` where that lies in the bin, else the float of the bin next to it (one ulp further
    out quantises to a neighbour), with ``dy/du = 1 / L`` at every ``u``."""
    edges = _bin_edge_noise(dtype)
    for levels in range(2, 257):
        x = torch.arange(levels, dtype=dtype).repeat_interleave(len(edges)).view(1, -1)
        u = edges.repeat(levels).view(1, -1).requires_grad_()
        y, _ = _GivenNoise(levels, u)(x)
        y.sum().backward()
        y = y.detach()
        plain = (x + u.detach()) / levels
        in_bin = torch.floor(plain * levels) == x
        assert ((y >= 0) & (y < 1)).all() and torch.equal(torch.floor(y * levels), x), levels
        assert torch.equal(y[in_bin], plain[in_bin]), levels
        assert (torch.floor(torch.nextafter(y, plain)[~in_bin] * levels) != x[~in_bin]).all(), levels
        torch.testing.assert_close(u.grad, torch.full_like(u, 1 / levels))


def test_dequantization_rejects_non_pixels() -> None:
    with pytest.raises(ValueError, match="integer values"):
        UniformDequantization(4)(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="integer values"):
        UniformDequantization(4)(torch.tensor([[4.0, 1.0]]))


def test_variational_dequantization_bound_trains_the_noise_flow() -> None:
    torch.manual_seed(0)
    deq = VariationalDequantization(5, (1, 2, 2), steps=2, hidden=4)
    x = torch.randint(0, 5, (8, 1, 2, 2)).float()
    y, term = deq(x)
    assert ((y >= x / 5) & (y <= (x + 1) / 5)).all()
    term.sum().backward()
    grads = [p.grad for p in deq.noise_flow.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)



def test_variational_dequantization_term_is_minus_log_levels_and_the_noise_density() -> None:
    """The bound's term is ``-d log L - log r(u | x)``, with ``r`` the density of ``u = sigmoid(g^{-1}(e; x))`` for
    ``e ~ N(0, I)``: checked by the change of variables with the autograd Jacobian of ``e -> u``."""
    torch.manual_seed(0)
    levels, shape, d = 5, (2, 2, 2), 8
    deq = VariationalDequantization(levels, shape, steps=2, hidden=4).double().eval()
    with torch.no_grad():
        for p in deq.noise_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))  # the conditioners start at zero: make the noise flow a real warp
    x = torch.randint(0, levels, (3, *shape)).double()
    torch.manual_seed(1)
    y, term = deq(x)
    torch.manual_seed(1)
    e = torch.randn(3, 16, dtype=x.dtype)[:, :d].reshape(x.shape)  # the draw forward made: 16 normals per image
    cond = 2 * x / (levels - 1) - 1  # the conditioners see the image scaled to [-1, 1]
    normal = torch.distributions.Normal(0.0, 1.0)
    for i in range(len(x)):
        def u_of(ei, i=i):
            return torch.sigmoid(deq.noise_flow.inverse(ei.unsqueeze(0), cond[i : i + 1])[0][0])

        u = u_of(e[i])
        assert ((u > 0) & (u < 1)).all() and (u - 0.5).abs().max() > 0.1  # not the identity-like start
        torch.testing.assert_close(y[i], (x[i] + u) / levels)
        log_r = normal.log_prob(e[i]).sum() - torch.linalg.slogdet(torch.func.jacrev(u_of)(e[i]).reshape(d, d))[1]
        torch.testing.assert_close(term[i], -d * math.log(levels) - log_r)


def test_variational_dequantization_inverse_in_training_mode_keeps_its_parameters() -> None:
    """Quantising in training mode (a sample drawn mid-training) neither re-initialises the noise flow's ActNorm
    layers nor breaks ``inverse(forward(x)) == (x, -ladj)``."""
    torch.manual_seed(0)
    deq = VariationalDequantization(5, (1, 2, 2), steps=2, hidden=4).double().train()
    x = torch.randint(0, 5, (8, 1, 2, 2)).double()
    y, term = deq(x)
    state = {k: v.clone() for k, v in deq.state_dict().items()}
    back, term_back = deq.inverse(y)
    assert torch.equal(back, x)
    torch.testing.assert_close(term_back, -term)
    assert all(torch.equal(v, state[k]) for k, v in deq.state_dict().items())

def test_digits_split_and_context() -> None:
    b = load("digits")
    assert b.raw and (len(b.train), len(b.val), len(b.test)) == (1347, 150, 300)
    assert b.levels == 17 and tuple(b.event_shape) == (1, 8, 8)
    assert torch.equal(b.train, b.train.round()) and b.train.max() == 16 and b.train.min() == 0
    assert torch.equal(load("digits", seed=0, raw=True).test, b.test) and not torch.equal(load("digits", seed=1, raw=True).test, b.test)
    # raw=False stores dequantized logits drawn once; the preprocess inverse recovers the pixels
    y = load("digits", raw=False)
    assert not y.raw
    pixels, ladj_inverse = y.preprocess.inverse(y.test)
    torch.testing.assert_close(pixels, b.test)
    assert torch.equal(y.test, load("digits", raw=False).test)
    c = load("digits", conditional=True)
    assert c.context_features == 10 and torch.equal(c.test_context.sum(1), torch.ones(300))


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    head = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(head + array.tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_reader(tmp_path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split, n in [("train", 20), ("t10k", 6)]:
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n, dtype=np.uint8), gz)
    b = load(str(tmp_path), conditional=True)
    assert (len(b.train) + len(b.val), len(b.test)) == (20, 6)
    assert b.levels == 256 and tuple(b.event_shape) == (1, 4, 4) and b.test_context.shape == (6, 10)
    single = load(str(tmp_path / f"train-images-idx3-ubyte{ext}"), test_fraction=0.25)
    assert len(single.test) == 5
    assert len(load(str(tmp_path), limit=8).train) + len(load(str(tmp_path), limit=8).val) == 8
    for bad in (0, -5):
        with pytest.raises(ValueError, match="limit must be >= 1"):
            load(str(tmp_path), limit=bad)
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        (test_only / f"t10k-{kind}-ubyte{ext}").write_bytes((tmp_path / f"t10k-{kind}-ubyte{ext}").read_bytes())
    alone = load(str(test_only), conditional=True, test_fraction=0.5, val_fraction=0.0)
    assert (len(alone.train), len(alone.test), tuple(alone.event_shape)) == (3, 3, (1, 4, 4)) and alone.test_context is not None
    unlabelled_test = tmp_path / "unlabelled-test"
    unlabelled_test.mkdir()
    for name in (f"train-images-idx3-ubyte{ext}", f"train-labels-idx1-ubyte{ext}", f"t10k-images-idx3-ubyte{ext}"):
        (unlabelled_test / name).write_bytes((tmp_path / name).read_bytes())
    assert load(str(unlabelled_test)).test.shape == (6, 1, 4, 4)
    with pytest.raises(ValueError, match="its test images have no labels, so it cannot be class-conditional"):
        load(str(unlabelled_test), conditional=True)
    _write_idx(tmp_path / "none-images-idx3-ubyte", np.zeros((0, 4, 4), np.uint8), False)
    with pytest.raises(ValueError, match="holds no images"):
        load(str(tmp_path / "none-images-idx3-ubyte"))


def test_idx_reader_rejects_garbage(tmp_path) -> None:
    bad = tmp_path / "images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        load(str(bad))
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + b"\x00" * 7)
    with pytest.raises(ValueError, match="promises"):
        load(str(short))
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="cut short"):
        load(str(cut))
    not_gzip = tmp_path / "images-idx3-ubyte.gz"
    not_gzip.write_bytes(b"plain text")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        load(str(not_gzip))
    truncated = tmp_path / "t10k-images-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (400).to_bytes(4, "big") + bytes(range(200)) * 2)[:100])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        load(str(truncated))


def test_cifar_and_png_readers(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name, n in [("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (cifar / name).write_bytes(pickle.dumps(d))
    b = load(str(cifar), val_fraction=0.0)
    assert (len(b.train), len(b.test), tuple(b.event_shape)) == (10, 3, (3, 32, 32))

    pngs = tmp_path / "pngs"
    for cls in ("a", "b"):
        (pngs / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(pngs / cls / f"{i}.png")
    p = load(str(pngs), conditional=True, test_fraction=0.5, val_fraction=0.0)
    assert (len(p.train), len(p.test), tuple(p.event_shape), p.context_features) == (3, 3, (1, 4, 4), 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="found no"):
        load(str(empty))


@pytest.mark.parametrize("layer", [Conv1x1(3), LUConv1x1(3), PeriodicConv(3)], ids=["conv1x1", "lu", "periodic"])
def test_inference_cache_follows_parameters(layer) -> None:
    layer.eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        z1, l1 = layer(x)
        assert layer._inference_cache
        torch.testing.assert_close(layer.inverse(z1)[0], x, atol=1e-5, rtol=1e-5)
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
        z2, l2 = layer(x)
    layer.train()
    z3, l3 = layer(x)
    torch.testing.assert_close(z2, z3.detach())
    torch.testing.assert_close(l2, l3.detach())
    assert not torch.allclose(z1, z2)


@pytest.mark.parametrize("cls", [Conv1x1, LUConv1x1, PeriodicConv], ids=["conv1x1", "lu", "periodic"])
def test_inference_cache_is_bypassed_for_a_layer_built_under_inference_mode(cls) -> None:
    """Inference tensors keep no version counter: the cache compares values, so it sees in-place updates."""
    x = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():
        layer = cls(3).eval()
        z1, l1 = layer(x)
        torch.testing.assert_close(layer.inverse(z1)[0], x, atol=1e-5, rtol=1e-5)
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
        z2, l2 = layer(x)
        torch.testing.assert_close(layer.inverse(z2)[0], x, atol=1e-5, rtol=1e-5)
    fresh = cls(3).train()
    fresh.load_state_dict(layer.state_dict())
    z3, l3 = fresh(x)
    torch.testing.assert_close(z2, z3.detach())
    torch.testing.assert_close(l2, l3.detach())


@pytest.mark.parametrize("permutation", ["conv1x1_lu", "conv1x1"])
def test_glow_loaded_under_inference_mode_samples_and_scores(tmp_path, permutation: str) -> None:
    options = dict(event_shape=[1, 4, 4], levels=1, steps=1, hidden=4, permutation=permutation)
    saved = build("glow", **options)
    saved.log_prob(torch.randn(8, 1, 4, 4))  # initialises ActNorm
    saved.eval().save(tmp_path / "glow")
    x = torch.randn(3, 1, 4, 4)
    with torch.inference_mode():
        flow = invertible.load(tmp_path / "glow")
        samples, log_p = flow.sample_and_log_prob(4)
        torch.testing.assert_close(flow.log_prob(samples), log_p, atol=1e-4, rtol=1e-4)
        scores = flow.log_prob(x)
    with torch.no_grad():
        torch.testing.assert_close(scores, saved.log_prob(x))


def test_checkerboard_coupling_keeps_identity_pixels_whatever_the_unused_parameters() -> None:
    class Conditioner(torch.nn.Module):
        def forward(self, x, context):  # log-scale 200 at the identity pixels (exp(200) overflows float32), 0.5 elsewhere
            return torch.cat([torch.where(keep, 200.0, 0.5), torch.zeros(1, 2, 2)]).expand(x.shape[0], 2, 2, 2)

    layer = AffineImageCoupling((1, 2, 2), "checkerboard", 0, hidden=4, scale="exp")
    keep = layer.mask.bool()
    layer.net = Conditioner()
    x = torch.tensor([[[[0.0, 1.5], [-2.0, 3.0]]]])
    for inverse in (False, True):
        y, ladj = layer.inverse(x) if inverse else layer(x)
        expected = x * torch.where(keep, 1.0, math.exp(-0.5 if inverse else 0.5))
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(ladj, torch.tensor([-1.0 if inverse else 1.0]))


@pytest.mark.parametrize("channels", [2, 3, 5])
def test_alternating_channel_masks_transform_every_channel(channels: int) -> None:
    # parity 1 must transform exactly the channels parity 0 keeps, also for an odd count
    # (a flipped ceil(C/2) mask kept the middle channel in both and never transformed it)
    assert torch.equal(channel_mask(channels, 1), ~channel_mask(channels, 0))
    torch.manual_seed(0)
    x = torch.randn(2, channels, 2, 2, dtype=torch.float64)
    changed = torch.zeros(channels, dtype=torch.bool)
    for parity in (0, 1):
        for layer in (
            AffineImageCoupling((channels, 2, 2), "channel", parity, hidden=4),
            AdditiveImageCoupling((channels, 2, 2), "channel", parity, hidden=4),
        ):
            layer.double()
            with torch.no_grad():
                for p in layer.parameters():
                    p.add_(0.5 * torch.randn_like(p))
            y, _ = layer(x)
            moved = (y != x).flatten(2).any(2).any(0)
            assert torch.equal(moved, ~channel_mask(channels, parity))
            torch.testing.assert_close(layer.inverse(y)[0], x)
            changed |= moved
    assert changed.all()


def test_batchnorm_uses_batch_then_running_statistics() -> None:
    bn = BatchNorm(2, momentum=1.0)
    x = torch.randn(64, 2, 3, 3) * 3 + 1
    z, ladj = bn(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj[0], -0.5 * 9 * torch.log(x.var(dim=(0, 2, 3), unbiased=False) + bn.eps).sum())
    bn.eval()
    z_eval, _ = bn(x)
    torch.testing.assert_close(z_eval, z, atol=1e-5, rtol=1e-5)


def test_glow_temperature_conditioning_and_save(tmp_path) -> None:
    torch.manual_seed(0)
    flow = Glow((1, 4, 4), context_features=3, levels=2, steps=1, hidden=8)
    ctx = torch.eye(3)[[0, 1]]
    flow(torch.rand(2, 1, 4, 4), ctx)  # ActNorm initialisation
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.eval()
    torch.manual_seed(1)
    cold = flow.sample(1, ctx, temperature=0.5)
    torch.manual_seed(1)
    u = flow.base.sample((2,))
    torch.testing.assert_close(cold.reshape(2, 1, 4, 4), flow.transform.inverse(0.5 * u, ctx)[0])
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            flow.sample(2, ctx, temperature=bad)
    x = torch.rand(2, 1, 4, 4)
    assert not torch.allclose(flow.log_prob(x, ctx), flow.log_prob(x, ctx.flip(0)))
    flow.save(tmp_path / "glow")
    again = invertible.load(str(tmp_path / "glow"))
    torch.testing.assert_close(again.log_prob(x, ctx), flow.log_prob(x, ctx))


def test_float64_glow_loads_back_in_float64(tmp_path) -> None:
    torch.manual_seed(0)
    flow = Glow((1, 4, 4), levels=1, steps=1, hidden=4).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    flow(x)  # ActNorm initialisation
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(1e-9 * torch.randn_like(p))
    flow.eval().save(tmp_path / "glow64")
    again = invertible.load(str(tmp_path / "glow64"))
    assert all(p.dtype == torch.float64 for p in again.parameters())
    torch.testing.assert_close(again.log_prob(x), flow.log_prob(x), atol=1e-12, rtol=0)


def test_image_presets_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build("glow", event_shape=[1, 6, 6], levels=2)
    with pytest.raises(ValueError, match="event_shape"):
        build("glow", event_shape=[8, 8])
    with pytest.raises(ValueError, match="divisible"):
        build("realnvp", event_shape=[1, 6, 6], levels=3)
    # a last scale of 1x1: half of its checkerboard couplings kept the pixel (no gradient), half saw nothing;
    # refused by build, while a model saved with one still loads (rebuild)
    for shape, levels in (([1, 8, 8], 4), ([1, 4, 4], 3), ([3, 1, 1], 1)):
        with pytest.raises(ValueError, match=f"model option levels={levels} builds layers that cannot learn: the last "
                                             f"of {levels} scales works on 1x1 images, where checkerboard couplings "
                                             "have a single pixel to split: use fewer levels"):
            build("realnvp", event_shape=shape, levels=levels)
        assert rebuild("realnvp", event_shape=shape, levels=levels).event_shape == tuple(shape)
    assert build("realnvp", event_shape=[1, 8, 8], levels=3).event_shape == (1, 8, 8)  # a 2x2 last scale
    with pytest.raises(ValueError, match="features"):
        build("nice")
    with pytest.raises(ValueError, match="hidden channels must be >= 1"):
        build("glow", event_shape=[1, 4, 4], levels=1, hidden=-3)
    with pytest.raises(ValueError, match="hidden channels >= 1 and blocks >= 0"):
        build("realnvp", event_shape=[1, 4, 4], hidden_channels=0)
    with pytest.raises(ValueError, match="hidden channels >= 1 and blocks >= 0"):
        build("realnvp", event_shape=[1, 4, 4], blocks=-1)
    with pytest.raises(ValueError, match="hidden widths must be >= 1"):
        build("nice", event_shape=[1, 4, 4], hidden=[-3])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        build("glow", event_shape=[1, 4, 4], levels=1, steps=-1)
    for model in ("nice", "realnvp"):
        with pytest.raises(ValueError, match="layers must be >= 1"):
            build(model, features=4, layers=0)
    assert tuple(build("nice", event_shape=[1, 4, 4], hidden=[8]).sample(2).shape) == (2, 1, 4, 4)


def test_glow_priors_invert_and_differ_in_size() -> None:
    torch.manual_seed(0)
    x, ctx = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    sizes = {}
    for prior in ("fixed", "channel", "conditional"):
        flow = Glow((1, 4, 4), context_features=3, levels=2, steps=1, hidden=8, prior=prior).double()
        flow(x, ctx)  # ActNorm initialisation
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.1 * torch.randn_like(p))
        z, ladj = flow.transform(x, ctx)
        back, ladj_inv = flow.transform.inverse(z, ctx)
        torch.testing.assert_close(back, x)
        torch.testing.assert_close(ladj + ladj_inv, torch.zeros(3, dtype=torch.float64))
        sizes[prior] = sum(p.numel() for p in flow.parameters())
    assert sizes["fixed"] < sizes["channel"] < sizes["conditional"]
    with pytest.raises(ValueError, match="prior"):
        Glow((1, 4, 4), prior="learned")


def test_glow_conditioner_output_gain_is_optional() -> None:
    from invertible.nets import GlowConvNet

    plain, gained = GlowConvNet(2, 4, 8), GlowConvNet(2, 4, 8, output_gain=True)
    assert sum(p.numel() for p in gained.parameters()) - sum(p.numel() for p in plain.parameters()) == 4
    x = torch.randn(2, 2, 4, 4)
    assert plain(x).abs().max() == 0 and gained(x).abs().max() == 0  # zero-initialised output either way
    # Glow's option: one gain per output channel of every coupling network (2 levels x 1 step: 4 + 8 outputs)
    glows = {g: Glow((1, 4, 4), levels=2, steps=1, hidden=8, output_gain=g) for g in (False, True)}
    size = {g: sum(p.numel() for p in flow.parameters()) for g, flow in glows.items()}
    assert size[True] - size[False] == 12
    with pytest.raises(ValueError, match="output_gain"):
        AffineImageCoupling((2, 4, 4), "channel", 0, hidden=4, net="resnet", output_gain=True)


@pytest.mark.parametrize("test_images, message", [
    (np.full((3, 1, 4, 4), 8), "dataset 'pixels': its test images: pixel values must be integers in [0, 7]"),
    (np.full((3, 1, 4, 4), 2.5), "dataset 'pixels': its test images: pixel values must be integers in [0, 7]"),
    (np.zeros((3, 1, 4, 5)), "dataset 'pixels': its test images must have shape (n, 1, 4, 4) like its training images, got (3, 1, 4, 5)"),
    (np.zeros((1, 4, 4)), "dataset 'pixels': its test images must have shape (n, 1, 4, 4) like its training images, got (1, 4, 4)"),
])
def test_a_separate_test_set_is_checked_as_the_training_images(test_images, message) -> None:
    from invertible.data.images import image_bundle

    images = np.random.default_rng(0).integers(0, 8, (20, 1, 4, 4))
    with pytest.raises(ValueError) as e:
        image_bundle("pixels", images, None, 8, test=(test_images, None))
    assert str(e.value) == message
    bundle = image_bundle("pixels", images, None, 8, test=(images[:3], None))
    assert torch.equal(bundle.test, torch.as_tensor(images[:3], dtype=bundle.test.dtype))
