"""MAF/IAF presets: MoG base, batch norm, one-pass IAF sampling with log-density, save/load."""

import json
import math

import pytest
import torch

import invertible
from invertible.distributions import MixtureOfGaussians
from invertible.models import build
from invertible.transforms import BatchNorm


def test_mog_base_integrates_to_one_and_samples():
    torch.manual_seed(0)
    base = MixtureOfGaussians(1, components=3).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[-2.0, 0.0, 3.0]]))
        base.log_scale.copy_(torch.tensor([[-0.5, 0.0, 0.3]]))
        base.logits.copy_(torch.tensor([[0.0, 1.0, -1.0]]))
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64).unsqueeze(1)
    mass = torch.trapezoid(base.log_prob(grid).exp(), grid[:, 0])
    assert abs(mass.item() - 1.0) < 1e-6
    s = base.sample((20000,))
    assert s.shape == (20000, 1)
    mean = (torch.softmax(base.logits, -1) * base.loc).sum()
    assert abs(s.mean().item() - mean.item()) < 0.06


def test_iaf_sample_and_log_prob_agrees_with_log_prob():
    torch.manual_seed(1)
    flow = build("iaf", features=4, layers=3, hidden=[16], context_features=2).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ctx = torch.randn(6, 2, dtype=torch.float64)
    x, log_p = flow.sample_and_log_prob(1, ctx)
    torch.testing.assert_close(flow.log_prob(x[0], ctx), log_p[0])


def test_maf_with_batch_norm_trains_and_round_trips_through_save(tmp_path):
    torch.manual_seed(0)
    flow = build("maf", features=3, layers=3, hidden=[16, 16], batch_norm=True, base="mog", components=4)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    data = torch.randn(512, 3) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + 1.0
    first = None
    for _ in range(60):
        loss = -flow.log_prob(data).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5
    flow.eval()
    flow.save(tmp_path / "m")
    again = invertible.load(tmp_path / "m")
    torch.testing.assert_close(again.log_prob(data[:10]), flow.log_prob(data[:10]))
    assert math.isfinite(flow.sample(5).sum().item())


def test_files_of_an_older_or_newer_format_are_refused_with_the_reason(tmp_path):
    for name, options in (("maf", {"features": 2, "layers": 2, "hidden": [8]}), ("realnvp", {"features": 2, "layers": 2})):
        build(name, **options).save(tmp_path / name)
        config = json.loads((tmp_path / name / "model.json").read_text())
        assert config["format"] == 2
        (tmp_path / name / "model.json").write_text(json.dumps({**config, "format": 1}))
    with pytest.raises(ValueError, match="saved in format 1.*retrain"):
        invertible.load(tmp_path / "maf")
    invertible.load(tmp_path / "realnvp")  # format 1 realnvp weights mean the same map
    (tmp_path / "realnvp" / "model.json").write_text(json.dumps({**config, "format": 3}))
    with pytest.raises(ValueError, match="format 3; this version of invertible reads up to 2"):
        invertible.load(tmp_path / "realnvp")


def test_maf_starts_as_a_volume_preserving_shear_and_iaf_as_the_identity():
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    maf = build("maf", features=3, layers=2, hidden=[16])
    z, ladj = maf.transform(x)
    assert ladj.eq(0).all() and not torch.allclose(z, x)  # z_i = x_i + m_i(x_<i): log-det exactly 0
    assert maf.config["options"]["init"] is None  # the preset's default is recorded as such
    same = build("maf", features=3, layers=2, hidden=[16], init="identity")
    z, ladj = same.transform(x)
    assert torch.equal(z, x) and ladj.eq(0).all()
    iaf = build("iaf", features=3, layers=2, hidden=[16])
    u, ladj = iaf.transform.inverse(x)
    assert torch.equal(u, x) and ladj.eq(0).all()
    with pytest.raises(ValueError, match="unknown init 'random'"):
        build("maf", features=3, init="random")


def test_iaf_batch_norm_follows_the_samples_it_is_trained_on():
    """IAF's batch-norm sits on the sampling side: training-mode samples move its running statistics."""
    torch.manual_seed(0)
    flow = build("iaf", features=3, layers=3, hidden=[16], batch_norm=True)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    norms = [m for m in flow.modules() if isinstance(m, BatchNorm)]
    flow.train()
    x, _ = flow.rsample_and_log_prob(256)
    assert all(not torch.equal(n.running_mean, torch.zeros(3)) for n in norms)
    flow.eval()
    x, log_p = flow.sample_and_log_prob(8)
    torch.testing.assert_close(flow.log_prob(x), log_p, atol=1e-5, rtol=1e-5)
