"""The core contract, checked against independent computations rather than the library's own layers.

Pinned here: :class:`Compose` runs its steps in order (and inverts them in reverse), adding log-dets;
:class:`Inverse` swaps the directions and negates the log-det; ``exact_logdet`` propagates; :class:`Flow`'s
density is the change of variables ``log p(x) = log p(z) + log|det dz/dx|`` (equal to a closed-form Gaussian for
an affine flow), its samples' log-density is ``log p(u) - log|det dx/du|``; ``temperature`` ``T`` samples
``f^{-1}(T u)`` from the same base noise ``u``; a context's rows line up with the samples drawn for them;
``sample`` is gradient-free and ``rsample`` reparameterised (through a learnable base too); and
:class:`FlowDistribution` is a reparameterisable ``torch.distributions`` object over real vectors.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from invertible import Compose, Flow, Inverse, Transform
from invertible.distributions import DiagonalNormal, StandardNormal

D = 3


class Scale(Transform):
    """``z = a x`` elementwise: ``log|det dz/dx| = sum log|a|``."""

    def __init__(self, a: Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x, context=None):
        return x * self.a, self.a.abs().log().sum().expand(x.shape[0])

    def inverse(self, z, context=None):
        return z / self.a, -self.a.abs().log().sum().expand(z.shape[0])


class Shift(Transform):
    """``z = x + b``: volume-preserving."""

    def __init__(self, b: Tensor):
        super().__init__()
        self.b = b

    def forward(self, x, context=None):
        return x + self.b, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z - self.b, z.new_zeros(z.shape[0])


class ContextShift(Transform):
    """``z = x - c``, ``c`` the context row: samples are ``x = u + c``."""

    def forward(self, x, context=None):
        return x - context, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z + context, z.new_zeros(z.shape[0])


class Estimated(Shift):
    exact_logdet = False


def a_() -> Tensor:
    return torch.tensor([2.0, 0.5, -3.0], dtype=torch.float64)


def b_() -> Tensor:
    return torch.tensor([1.0, -2.0, 0.25], dtype=torch.float64)


def test_compose_runs_its_steps_in_order_and_inverts_them_in_reverse() -> None:
    a, b, c = a_(), b_(), torch.tensor([0.5, 4.0, 1.5], dtype=torch.float64)
    f = Compose(Scale(a), Shift(b), Scale(c))
    x = torch.randn(5, D, dtype=torch.float64)
    logdet = (a.abs().log() + c.abs().log()).sum()
    z, ladj = f(x)
    torch.testing.assert_close(z, (a * x + b) * c)
    torch.testing.assert_close(ladj, logdet.expand(5))
    back, ladj_inv = f.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ladj_inv, -logdet.expand(5))


def test_an_empty_compose_is_the_identity_with_zero_logdet() -> None:
    x = torch.randn(4, D)
    for direction in (Compose().forward, Compose().inverse):
        y, ladj = direction(x)
        assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))


def test_inverse_swaps_the_directions_and_negates_the_logdet() -> None:
    a, b = a_(), b_()
    t = Compose(Scale(a), Shift(b))
    inv = Inverse(t)
    z = torch.randn(4, D, dtype=torch.float64)
    x, ladj = inv(z)
    torch.testing.assert_close(x, (z - b) / a)
    torch.testing.assert_close(ladj, -a.abs().log().sum().expand(4))
    y, ladj_inv = inv.inverse(z)
    torch.testing.assert_close(y, a * z + b)
    torch.testing.assert_close(ladj_inv, a.abs().log().sum().expand(4))
    assert isinstance(t.inv(), Inverse) and t.inv().transform is t
    assert inv.inv() is t


def test_exact_logdet_is_false_as_soon_as_one_step_estimates() -> None:
    exact, estimated = Shift(b_()), Estimated(b_())
    assert Compose(exact, exact).exact_logdet
    assert not Compose(exact, estimated).exact_logdet
    assert Inverse(exact).exact_logdet and not Inverse(estimated).exact_logdet


def affine_flow(mu: Tensor, s: Tensor, base: nn.Module | None = None) -> Flow:
    """``z = (x - mu) / s`` on a standard normal: the flow of ``N(mu, diag(s^2))``."""
    return Flow(Compose(Shift(-mu), Scale(1 / s)), base if base is not None else StandardNormal(D).double())


def test_log_prob_is_the_change_of_variables_of_an_affine_map() -> None:
    mu, s = b_(), torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    flow = affine_flow(mu, s)
    x = torch.randn(2, 4, D, dtype=torch.float64) * 2
    expected = torch.distributions.Normal(mu, s).log_prob(x).sum(-1)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_a_single_event_without_a_batch_dimension_is_refused() -> None:
    flow = affine_flow(b_(), torch.ones(D, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x has shape \(3,\); expected \(batch, 3\)"):
        flow.log_prob(torch.zeros(D, dtype=torch.float64))


def test_a_context_must_match_the_flow_and_the_data() -> None:
    flow = Flow(ContextShift(), StandardNormal(D), context_features=D)
    x = torch.zeros(4, D)
    with pytest.raises(ValueError, match=r"this flow is conditional: pass context of shape \(batch, 3\)"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"context batch shape \(2,\) does not match the data batch shape \(4,\)"):
        flow.log_prob(x, torch.zeros(2, D))
    with pytest.raises(ValueError, match="context contains non-finite values"):
        flow.log_prob(x, torch.full((4, D), math.inf))
    with pytest.raises(ValueError, match="this flow is unconditional"):
        affine_flow(b_(), torch.ones(D, dtype=torch.float64)).log_prob(x.double(), x.double())


def test_a_nan_density_of_a_diverged_flow_names_its_parameters() -> None:
    flow = affine_flow(b_(), torch.tensor([1.0, math.nan, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"log_prob is NaN at 2 of 2 input\(s\): the flow's parameters are not all finite"):
        flow.log_prob(torch.zeros(2, D, dtype=torch.float64))


def test_samples_come_with_their_log_density() -> None:
    mu, s = b_(), torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    flow = affine_flow(mu, s)
    torch.manual_seed(0)
    for method in (flow.rsample_and_log_prob, flow.sample_and_log_prob):
        x, log_p = method((2, 3))
        assert x.shape == (2, 3, D) and log_p.shape == (2, 3)
        torch.testing.assert_close(log_p, torch.distributions.Normal(mu, s).log_prob(x).sum(-1))


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_temperature_scales_the_base_noise(temperature: float) -> None:
    """``x = f^{-1}(T u)``: for ``z = (x - mu) / s`` that is ``mu + s T u`` with the very draw ``u`` of the base."""
    mu, s = b_(), torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    flow = affine_flow(mu, s)
    torch.manual_seed(3)
    u = torch.randn(6, D, dtype=torch.float64)
    for method in (flow.sample, flow.rsample):
        torch.manual_seed(3)
        torch.testing.assert_close(method(6, temperature=temperature), mu + s * temperature * u)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_a_temperature_that_is_not_finite_and_positive_is_refused(temperature: float) -> None:
    flow = affine_flow(b_(), torch.ones(D, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        flow.sample(2, temperature=temperature)


def test_each_context_row_drives_the_samples_drawn_for_it() -> None:
    """With a context of batch shape ``B``, ``sample(n, c)[i, j]`` is drawn from row ``c[j]``, from noise row ``i B + j``."""
    flow = Flow(ContextShift(), StandardNormal(D), context_features=D)
    ctx = torch.arange(2 * D, dtype=torch.float32).reshape(2, D) * 10
    torch.manual_seed(1)
    u = torch.randn(4 * 2, D)
    torch.manual_seed(1)
    x = flow.sample(4, ctx)
    assert x.shape == (4, 2, D)
    torch.testing.assert_close(x - ctx, u.reshape(4, 2, D))
    assert flow.sample((2, 3), ctx).shape == (2, 3, 2, D)


def test_an_empty_sample_is_allowed_and_a_negative_one_refused() -> None:
    flow = affine_flow(b_(), torch.ones(D, dtype=torch.float64))
    assert flow.sample(0).shape == (0, D) and flow.sample((2, 0)).shape == (2, 0, D)
    with pytest.raises(ValueError, match=r"sample shape must be non-negative, got \(-1,\)"):
        flow.sample(-1)


def test_sample_is_gradient_free_and_rsample_reparameterised() -> None:
    s = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    flow = affine_flow(b_(), s)
    scale = flow.transform[1].a  # 1 / s
    assert not flow.sample(4).requires_grad
    x, log_p = flow.sample_and_log_prob(4)
    assert not x.requires_grad and not log_p.requires_grad
    torch.manual_seed(0)
    u = torch.randn(4, D, dtype=torch.float64)
    torch.manual_seed(0)
    flow.rsample(4).sum().backward()  # x = mu + u / a: d sum(x) / d a = -sum(u) / a^2
    torch.testing.assert_close(scale.grad, -u.sum(0) / scale.detach() ** 2)


def test_samples_are_reparameterised_through_a_learnable_base() -> None:
    """``u = loc + e^{log_scale} eps``: with the identity transform ``d sum(x) / d loc = n`` per dimension."""
    base = DiagonalNormal(D)
    flow = Flow(Compose(), base)
    x, _ = flow.rsample_and_log_prob(5)
    x.sum().backward()
    torch.testing.assert_close(base.loc.grad, torch.full((D,), 5.0))


def test_flow_distribution_is_a_reparameterised_distribution_over_real_vectors() -> None:
    flow = Flow(ContextShift(), StandardNormal(D), context_features=D)
    ctx = torch.zeros(2, D, requires_grad=True)
    d = flow.as_distribution(ctx)
    assert d.has_rsample and d.batch_shape == (2,) and d.event_shape == (D,)
    assert d.support.event_dim == 1 and bool(d.support.check(torch.zeros(2, D)).all())
    assert d.support.check(torch.zeros(2, D)).shape == (2,)
    assert not d.sample((3,)).requires_grad
    x = d.rsample((3,))
    assert x.shape == (3, 2, D)
    x.sum().backward()
    torch.testing.assert_close(ctx.grad, torch.full((2, D), 3.0))
    with pytest.raises(ValueError, match="context has shape"):
        flow.as_distribution(torch.zeros(2, D + 1))


def test_the_moments_and_entropy_of_a_flow_distribution_say_how_to_estimate_them() -> None:
    d = Flow(ContextShift(), StandardNormal(D), context_features=D).as_distribution(torch.zeros(2, D))
    for moment, name, estimate in [("mean", "mean", "mean"), ("variance", "variance", "var"), ("stddev", "standard deviation", "std")]:
        with pytest.raises(NotImplementedError, match=re.escape(f"a flow's {name} has no closed form: estimate it as sample((n,)).{estimate}(0)")):
            getattr(d, moment)
    with pytest.raises(NotImplementedError, match=re.escape("estimate it as -log_prob(sample((n,))).mean(0)")):
        d.entropy()


def test_an_expanded_unconditional_distribution_samples_its_batch_shape() -> None:
    d = affine_flow(b_(), torch.ones(D, dtype=torch.float64)).as_distribution().expand((4,))
    assert d.sample((2,)).shape == (2, 4, D) and d.rsample().shape == (4, D)


# -- saving and restoring --------------------------------------------------------------------------------------


def test_an_interrupted_atomic_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path) -> None:
    from invertible.persistence import atomic_write

    target = tmp_path / "deep" / "er" / "file.bin"  # missing parents are made
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"complete"))
    assert target.read_bytes() == b"complete"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600

    def half(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_bytes() == b"complete"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]



@pytest.mark.parametrize("fails", ["disk", "safetensors"])
def test_an_atomic_write_that_runs_out_of_disk_names_its_file_in_an_oserror(tmp_path, fails) -> None:
    """A full disk: ``[Errno 28] No space left on device`` named no file, and safetensors raised its own
    SafetensorError, which the command line reported as a traceback."""
    import errno

    from safetensors import SafetensorError

    from invertible.persistence import atomic_write

    def full(tmp: str) -> None:
        Path(tmp).write_bytes(b"par")
        if fails == "disk":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match=f"cannot write {target}: .*No space left on device") as e:
        atomic_write(target, full)
    assert e.value.errno == (errno.ENOSPC if fails == "disk" else None)
    assert list(tmp_path.iterdir()) == []


def test_an_atomic_write_onto_a_directory_is_refused_before_writing(tmp_path) -> None:
    """The error names the directory (the rename used to fail naming the temporary file, after the write)."""
    from invertible.persistence import atomic_write

    (tmp_path / "out").mkdir()
    calls = []
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path / 'out'}: it is a directory"):
        atomic_write(tmp_path / "out", calls.append)
    assert calls == [] and [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())

def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def small_flow():
    from invertible.models import build

    torch.manual_seed(0)
    return build("realnvp", features=2, layers=2, hidden=[8])


def test_a_saved_flow_loads_with_its_density_dtype_and_eval_mode(tmp_path) -> None:
    import invertible

    flow = small_flow().double()
    flow.save(tmp_path / "m")
    x = torch.randn(5, 2, dtype=torch.float64)
    for where in (tmp_path / "m", tmp_path / "m" / "model.json"):  # the directory, or a file in it
        back = invertible.load(where)
        assert not back.training and next(back.parameters()).dtype == torch.float64
        assert torch.equal(back.log_prob(x), flow.log_prob(x))


def test_a_flow_without_a_config_is_not_saved(tmp_path) -> None:
    with pytest.raises(ValueError, match="has no preset config"):
        affine_flow(b_(), torch.ones(D, dtype=torch.float64)).save(tmp_path / "m")
    assert not (tmp_path / "m" / "model.json").exists()


def test_saving_onto_a_file_names_it_and_keeps_it(tmp_path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match=r"notes\.txt: it is a file; a model is saved as a directory"):
        small_flow().save(target)
    assert target.read_text() == "keep me"


def _rewrite(path, **changes) -> None:
    import json

    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("change, message", [
    ({"format": 0}, r"bad format 0"),
    ({"format": "2"}, r"bad format '2'"),
    ({"format": True}, r"bad format True"),
    ({"format": 3}, r"written in format 3; this version of invertible reads up to 2"),
    ({"options": None}, r"needs 'model' \(a preset's name\) and 'options'"),
    ({"model": 3}, r"needs 'model' \(a preset's name\) and 'options'"),  # was "'int' object has no attribute 'lower'"
    ({"model": None}, r"needs 'model' \(a preset's name\) and 'options'"),
])
def test_a_model_config_from_another_format_or_without_options_is_refused(tmp_path, change, message) -> None:
    import invertible

    small_flow().save(tmp_path / "m")
    _rewrite(tmp_path / "m" / "model.json", **change)
    with pytest.raises(ValueError, match=message):
        invertible.load(tmp_path / "m")


def test_a_config_without_a_format_is_format_1(tmp_path) -> None:
    """Format 1 meant another MAF map: a MAF config that names no format is refused, a RealNVP one loads."""
    import json

    import invertible
    from invertible.models import build

    build("maf", features=2, layers=1, hidden=[4]).save(tmp_path / "maf")
    small_flow().save(tmp_path / "nvp")
    for name in ("maf", "nvp"):
        path = tmp_path / name / "model.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "format"}))
    with pytest.raises(ValueError, match="saved in format 1"):
        invertible.load(tmp_path / "maf")
    invertible.load(tmp_path / "nvp")


def test_corrupt_model_files_are_value_errors(tmp_path) -> None:
    import invertible

    small_flow().save(tmp_path / "m")
    config = (tmp_path / "m" / "model.json").read_text()
    (tmp_path / "m" / "model.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        invertible.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{truncated")
    with pytest.raises(ValueError, match="corrupt model config"):
        invertible.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(config)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(ValueError, match="corrupt model weights"):
        invertible.load(tmp_path / "m")


def test_weights_with_an_extra_tensor_do_not_fit(tmp_path) -> None:
    import invertible
    from safetensors.torch import load_file, save_file

    small_flow().save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    save_file({**load_file(str(weights)), "stray": torch.zeros(1)}, str(weights))
    with pytest.raises(ValueError, match="do not fit model 'realnvp'"):
        invertible.load(tmp_path / "m")


def _checkpoint(step: int, value: float):
    from invertible.train.checkpoint import Checkpoint, rng_state

    return Checkpoint(step=step, model={"w": torch.full((300,), value)},
                      optimizer={"state": {}, "param_groups": []}, rng=rng_state())


def test_an_interrupted_rewrite_of_the_same_step_keeps_the_committed_checkpoint(tmp_path, monkeypatch) -> None:
    """Rewriting a step's tensor file (a resume that saves at the step it loaded) goes through a temporary file too."""
    import invertible.train.checkpoint as checkpoint
    from safetensors.torch import save_file

    checkpoint.save_checkpoint(tmp_path, _checkpoint(10, 1.0))

    def half(tensors, path):
        save_file(tensors, path)
        with open(path, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", half)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, _checkpoint(10, 2.0))
    back = checkpoint.load_checkpoint(tmp_path)
    assert back.step == 10 and torch.equal(back.model["w"], torch.full((300,), 1.0))


def test_restored_generators_replay_the_draws_that_followed_the_save(tmp_path) -> None:
    """Draws after saving and draws after restoring the loaded checkpoint are the same, numpy's cached second
    Gaussian included (an odd number of ``np.random.randn`` draws leaves one)."""
    import random

    import numpy as np

    from invertible.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    def draws():
        return torch.randn(3).tolist(), np.random.randn(3).tolist(), np.random.rand(), random.random()

    np.random.seed(5)
    np.random.randn()  # leaves a cached Gaussian
    random.seed(5)
    torch.manual_seed(5)
    save_checkpoint(tmp_path, _checkpoint(1, 0.0))
    after_save = draws()
    set_rng_state(load_checkpoint(tmp_path).rng)
    assert draws() == after_save


def test_bits_per_dim_of_a_uniform_model_is_log2_of_the_levels() -> None:
    """A uniform density over ``L`` levels in ``d`` dimensions has ``log p = -d log L``: ``log2 L`` bits/dim."""
    from invertible.metrics import bits_per_dim

    log_p = torch.full((2,), -3 * 4 * 4 * math.log(256.0), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(log_p, (3, 4, 4)), torch.full((2,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(bits_per_dim(log_p / 48 * 5, 5), torch.full((2,), 8.0, dtype=torch.float64))
    for empty in ((0,), 0, (3, 0)):
        with pytest.raises(ValueError, match="at least one dimension"):
            bits_per_dim(log_p, empty)


def test_an_atomic_write_reaches_the_disk_before_its_rename_and_the_rename_before_it_returns(tmp_path, monkeypatch) -> None:
    """Without ``fsync`` a crash of the machine may persist the rename but not the data (an empty file where the
    previous complete one was): the complete temporary file is flushed, then renamed, then its directory flushed."""
    import os
    import stat

    import invertible.persistence as persistence

    events = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode), st.st_size))
        fsync(fd)

    def record_replace(src, dst) -> None:
        events.append(("replace", os.stat(src).st_ino, False, os.stat(src).st_size))
        replace(src, dst)

    monkeypatch.setattr(persistence.os, "fsync", record_fsync)
    monkeypatch.setattr(persistence.os, "replace", record_replace)
    target = tmp_path / "file.bin"
    persistence.atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"x" * 1000))
    file_ino, dir_ino = target.stat().st_ino, tmp_path.stat().st_ino
    assert events == [("fsync", file_ino, False, 1000), ("replace", file_ino, False, 1000),
                      ("fsync", dir_ino, True, events[-1][3])]


def test_an_interrupted_save_leaves_no_model_config(tmp_path, monkeypatch) -> None:
    """``model.json`` marks a finished save (and a finished run): it is written after the weights, so a save
    interrupted while writing them leaves none."""
    import invertible.persistence as persistence

    def interrupted(tensors, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(persistence, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_flow().save(tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_weights_that_are_not_the_configs_are_refused(tmp_path) -> None:
    """A save over an older model interrupted between its two renames leaves new weights beside the old config:
    ``model.json`` records the SHA-256 of its weights, so loading refuses the pair; a config from before the digest
    was recorded still loads."""
    import json
    import shutil

    import invertible

    old, new = small_flow(), small_flow()
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.5)
    old.save(tmp_path / "m")
    new.save(tmp_path / "n")
    shutil.copy(tmp_path / "n" / "model.safetensors", tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="is not the weights .*model.json was saved with"):
        invertible.load(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    del config["weights_sha256"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(config))
    loaded = invertible.load(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), new.state_dict().values()))


def test_load_moves_the_flow_to_map_location(tmp_path) -> None:
    import invertible

    small_flow().save(tmp_path / "m")
    assert {p.device.type for p in invertible.load(tmp_path / "m", map_location="meta").parameters()} == {"meta"}


def test_absent_sections_come_back_absent(tmp_path) -> None:
    from invertible.train.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, _checkpoint(3, 1.0))
    back = load_checkpoint(tmp_path)
    names = ("ema", "best", "preprocess", "ema_preprocess", "best_preprocess", "fitted_preprocess")
    assert all(getattr(back, name) is None for name in names) and back.data_fingerprint is None


def test_a_checkpoint_missing_its_tensors_or_generator_states_is_corrupt(tmp_path) -> None:
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    from invertible.train.checkpoint import CHECKPOINT_DIR, CHECKPOINT_JSON, load_checkpoint, save_checkpoint

    directory = save_checkpoint(tmp_path, _checkpoint(3, 1.0))
    tensors = directory / "state-00000003.safetensors"
    save_file({k: v for k, v in load_file(str(tensors)).items() if k != "rng.torch"}, str(tensors))
    _rewrite(directory / CHECKPOINT_JSON, sha256=hashlib.sha256(tensors.read_bytes()).hexdigest())
    with pytest.raises(ValueError, match="random-generator states are missing"):
        load_checkpoint(tmp_path)
    tensors.unlink()
    with pytest.raises(ValueError, match="tensor file state-00000003.safetensors is missing"):
        load_checkpoint(tmp_path)
    assert json.loads((tmp_path / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())["step"] == 3


def test_a_record_that_fails_to_encode_keeps_the_committed_checkpoint(tmp_path) -> None:
    from invertible.train.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, _checkpoint(3, 1.0))
    bad = _checkpoint(4, 2.0)
    bad.state = {"ok": 1, "not json": object()}
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, bad)
    back = load_checkpoint(tmp_path)
    assert back.step == 3 and torch.equal(back.model["w"], torch.full((300,), 1.0))


def test_a_checkpoint_keeps_the_generator_states_it_was_given(tmp_path) -> None:
    """The states are those of the moment the training loop took them, not of the moment the file is written."""
    import random

    import numpy as np

    from invertible.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    ckpt = _checkpoint(1, 0.0)
    expected = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())
    save_checkpoint(tmp_path, ckpt)
    set_rng_state(load_checkpoint(tmp_path).rng)
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()) == expected


def test_samples_that_overflow_at_a_temperature_name_it() -> None:
    """``x = u / a`` with ``a`` the smallest float64: every sample of ``|T u| > 1e-16`` overflows to inf."""
    flow = Flow(Scale(torch.full((D,), 5e-324, dtype=torch.float64)), StandardNormal(D).double())
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"of 8 sample\(s\) are not finite: the inverse map overflowed the "
                                            r"torch.float64 range at temperature 2; sample in float64 or at a lower"):
        flow.sample(8, temperature=2.0)


@pytest.mark.parametrize("temperature", [0.25, 3.0])
def test_temperature_scales_a_learned_base_about_its_mean(temperature: float) -> None:
    """A diagonal normal base ``N(m, sigma^2)`` at temperature ``T`` is ``N(m, T^2 sigma^2)`` (Glow's
    ``p(z)^(1/T^2)``, normalised): the mean stays, only the spread shrinks or grows. A mixture scales each
    component about its mean and keeps the weights: a tight two-component mixture at ``T`` keeps its two modes."""
    from invertible.distributions import MixtureOfGaussians

    base = DiagonalNormal(D).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([5.0, -3.0, 0.5]))
        base.log_scale.copy_(torch.log(torch.tensor([0.5, 2.0, 1.0])))
    flow = Flow(Compose([]), base)
    torch.manual_seed(3)
    eps = torch.randn(6, D, dtype=torch.float64)
    torch.manual_seed(3)
    torch.testing.assert_close(flow.sample(6, temperature=temperature), base.loc + base.log_scale.exp() * temperature * eps)

    mixture = MixtureOfGaussians(1, components=2).double()
    with torch.no_grad():
        mixture.loc.copy_(torch.tensor([[-4.0, 4.0]]))
        mixture.log_scale.fill_(math.log(0.1))
    x = Flow(Compose([]), mixture).sample(4000, temperature=temperature).squeeze(-1)
    near = (x.abs() - 4.0).abs() < 0.1 * temperature * 5  # within five of the tempered component scales
    assert near.all() and 0.45 < (x > 0).double().mean() < 0.55
    assert (x.abs() - 4.0).std().item() == pytest.approx(0.1 * temperature, rel=0.1)
