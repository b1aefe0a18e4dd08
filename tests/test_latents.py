"""``Flow.encode`` / ``Flow.decode`` and the ``encode`` / ``decode`` commands: data to latents and back."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible import Flow
from invertible.cli import main
from invertible.commands._common import run_summary
from invertible.distributions import StandardNormal
from invertible.models import build
from invertible.train.build import read_preprocess_record, rebuild_preprocess
from invertible.transforms import ElementwiseAffine


@pytest.mark.parametrize("name, options, shape", [
    ("realnvp", {"features": 3, "layers": 2, "hidden": [8], "context_features": 2}, (3,)),
    ("maf", {"features": 3, "layers": 2, "hidden": [8], "context_features": 2}, (3,)),
    ("glow", {"event_shape": (1, 4, 4), "levels": 1, "steps": 2, "hidden": 8, "context_features": 2}, (1, 4, 4)),
])
def test_decode_inverts_encode_and_encode_is_the_transform(name, options, shape) -> None:
    torch.manual_seed(0)
    flow = build(name, **options).double().eval()
    with torch.no_grad():  # move every zero-initialised output layer off its identity start
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    c = torch.randn(2, 3, 2, dtype=torch.float64)
    z = flow.encode(x, c)
    assert z.shape == x.shape
    expected, _ = flow.transform(x.flatten(0, 1), c.flatten(0, 1))
    torch.testing.assert_close(z.flatten(0, 1), expected)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(flow.decode(z, c), x)
    # the density is the base's at the latent times the Jacobian factor
    _, ladj = flow.transform(x.flatten(0, 1), c.flatten(0, 1))
    torch.testing.assert_close(flow.log_prob(x, c).flatten(), flow.base.log_prob(z.flatten(0, 1)) + ladj)


def test_encode_carries_gradients_to_the_data_and_parameters() -> None:
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8])
    x = torch.randn(4, 2, requires_grad=True)
    flow.encode(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_encode_and_decode_check_their_inputs() -> None:
    flow = build("maf", features=3, layers=1, hidden=[8], context_features=2)
    c = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"z has shape \(4, 2\); expected \(batch, 3\)"):
        flow.decode(torch.zeros(4, 2), c)
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\); expected \(batch, 3\)"):
        flow.encode(torch.zeros(4, 2), c)
    with pytest.raises(ValueError, match="z contains 1 non-finite value"):
        flow.decode(torch.tensor([[0.0, float("inf"), 0.0]]), c[:1])
    with pytest.raises(ValueError, match="this flow is conditional"):
        flow.encode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"context batch shape \(3,\) does not match the data batch shape \(4,\)"):
        flow.decode(torch.zeros(4, 3), c[:3])
    with pytest.raises(TypeError, match=r"z has dtype torch.float64 but the flow's parameters are torch.float32"):
        flow.decode(torch.zeros(4, 3, dtype=torch.float64), c)


def test_points_the_maps_overflow_come_back_with_a_warning() -> None:
    scale = ElementwiseAffine(2, shift=False)
    with torch.no_grad():
        scale.log_scale.fill_(-10.0)  # the inverse multiplies by e^10
    flow = Flow(scale, StandardNormal(2))
    z = torch.tensor([[1e36, 0.0], [1.0, 2.0]])
    with pytest.warns(RuntimeWarning, match=r"1 of 2 decoded point\(s\) are not finite: the inverse map overflowed "
                                            r"the torch.float32 range; decode in float64"):
        x = flow.decode(z)
    assert torch.isinf(x[0, 0]) and torch.isfinite(x[1]).all()
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    with pytest.warns(RuntimeWarning, match=r"1 of 2 latent\(s\) are not finite: the forward map overflowed the "
                                            r"torch.float32 range; encode in float64"):
        flow.encode(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.encode(torch.ones(3, 2))


def test_a_made_pool_has_no_one_latent_space() -> None:
    single = build("made", features=3, hidden=[8])
    x = torch.randn(5, 3)
    torch.testing.assert_close(single.decode(single.encode(x)), x, atol=1e-5, rtol=1e-5)
    pool = build("made", features=3, hidden=[8], masks=4)
    with pytest.raises(ValueError, match=r"this MADE is a pool of 4 mask sets.*model.transform \(the loaded set, 0"):
        pool.encode(x)
    with pytest.raises(ValueError, match="this MADE is a pool of 4 mask sets"):
        pool.decode(x)


# -- the commands ---------------------------------------------------------------------------------------------------
FAST = ["--steps", "3", "--batch-size", "32", "--eval-every", "3", "--no-progress", "--no-plots", "--threads", "1"]


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _error(capsys, words: str, *argv) -> None:
    code, err = _cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> tuple[Path, Path]:
    """A MAF trained on a standardised CSV table of three correlated columns far from zero mean and unit scale."""
    root = tmp_path_factory.mktemp("latents")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 1))
    table = np.hstack([50 + 10 * a, -3 + a + 0.1 * rng.normal(size=(300, 1)), 1e3 * rng.normal(size=(300, 1))])
    path = root / "table.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,c", comments="")
    run = root / "run"
    assert main(["train", "--model", "maf", "--data", str(path), "-m", "layers=2", "-m", "hidden=[8]", *FAST,
                 "--out", str(run)]) == 0
    return run, path


def test_encode_a_table_and_decode_its_latents_back_to_the_rows(table_run, tmp_path, capsys) -> None:
    run, path = table_run
    code, err = _cli(capsys, "encode", run, "--data", path, "--split", "all", "--out", tmp_path / "z.npy")
    assert code == 0 and "wrote the latents of 300 rows (every row of table.csv, in file order), each of shape (3,)" \
        in err, err
    z = np.load(tmp_path / "z.npy")
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    flow = invertible.load(run)
    standardise = rebuild_preprocess(read_preprocess_record(run), run)  # the training split's statistics
    with torch.no_grad():
        expected = flow.encode(standardise(torch.as_tensor(rows, dtype=torch.float32))[0]).numpy()
    assert z.shape == (300, 3)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    code, err = _cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--raw", "--out", tmp_path / "x.npy")
    assert code == 0 and "wrote 300 decoded points of shape (3,)" in err, err
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), rows, rtol=1e-4, atol=1e-3)
    # without --raw the points are in the standardised space, and a note says so; .csv latents work alike
    code, _ = _cli(capsys, "encode", run, "--data", path, "--split", "all", "--out", tmp_path / "z.csv")
    code, err = _cli(capsys, "decode", run, "--latents", tmp_path / "z.csv", "--out", tmp_path / "y.npy")
    assert code == 0 and "note: the decoded points are in the space the model saw" in err, err
    y = np.load(tmp_path / "y.npy")
    assert abs(y.mean(0)).max() < 0.3 and abs(y.std(0) - 1).max() < 0.2


def test_encode_reads_the_rows_eval_scores(table_run, tmp_path, capsys) -> None:
    """The run's own data: the test split by default, any split by --split; an unknown split is a usage error."""
    run, _ = table_run
    code, err = _cli(capsys, "encode", run, "--out", tmp_path / "test.npy")
    assert code == 0 and "(the test split of" in err and np.load(tmp_path / "test.npy").shape == (30, 3), err
    code, err = _cli(capsys, "encode", run, "--split", "all", "--batch-size", "7", "--out", tmp_path / "all.npy")
    assert code == 0 and np.load(tmp_path / "all.npy").shape == (300, 3)
    np.testing.assert_allclose(np.load(tmp_path / "all.npy")[-30:], np.load(tmp_path / "test.npy"), atol=1e-6)
    _error(capsys, "encode takes no model options", "encode", run, "-m", "layers=3", "--out", tmp_path / "z.npy")
    _error(capsys, "--out must end in .npy or .csv, got 'z.txt'", "encode", run, "--out", tmp_path / "z.txt")
    _error(capsys, "--batch-size must be >= 1, got 0", "encode", run, "--batch-size", "0", "--out", tmp_path / "z.npy")


def test_encode_and_decode_refuse_to_overwrite_a_file_they_read(table_run, tmp_path, capsys) -> None:
    """--out naming the data, latents or context file read (by any path to it) is refused, and the file is kept."""
    run, path = table_run
    data = tmp_path / "data.csv"
    data.write_bytes(path.read_bytes())
    before = data.read_bytes()
    _error(capsys, f"--out {data} is the --data file, which this command reads", "encode", run, "--data", data,
           "--split", "all", "--out", data)
    own = Path(run_summary(run)["data_path"])
    (tmp_path / "link.csv").symlink_to(own)
    _error(capsys, "is the run's data file, which this command reads", "encode", run, "--out", tmp_path / "link.csv")
    assert data.read_bytes() == before and own.read_bytes() == path.read_bytes()
    assert _cli(capsys, "encode", run, "--data", data, "--split", "all", "--out", tmp_path / "z.npy")[0] == 0
    z = (tmp_path / "z.npy").read_bytes()
    _error(capsys, "is the --latents file, which this command reads", "decode", run, "--latents", tmp_path / "z.npy",
           "--out", tmp_path / "." / "z.npy")
    assert (tmp_path / "z.npy").read_bytes() == z


def test_decode_refuses_latents_it_cannot_decode(table_run, tmp_path, capsys) -> None:
    run, _ = table_run
    np.save(tmp_path / "wide.npy", np.zeros((4, 5)))
    code, err = _cli(capsys, "decode", run, "--latents", tmp_path / "wide.npy", "--out", tmp_path / "x.npy")
    assert code == 2 and err.endswith("has shape (4, 5); this flow's latents have shape (n, 3)\n"), err
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan, 1.0]]))
    _error(capsys, "holds 1 non-finite value(s)", "decode", run, "--latents", tmp_path / "nan.npy", "--out",
           tmp_path / "x.npy")
    np.save(tmp_path / "flat.npy", np.zeros(3))
    _error(capsys, "has shape (3,); expected one latent per row", "decode", run, "--latents", tmp_path / "flat.npy",
           "--out", tmp_path / "x.npy")
    (tmp_path / "words.csv").write_text("a,b,c\n1,x,3\n")
    _error(capsys, "words.csv: column 'b' (index 1) is not numeric: 'x' on line 2", "decode", run, "--latents",
           tmp_path / "words.csv", "--out", tmp_path / "x.npy")
    (tmp_path / "header.csv").write_text("a,b,c\n")
    _error(capsys, "header.csv: the file has a header but no data rows", "decode", run, "--latents",
           tmp_path / "header.csv", "--out", tmp_path / "x.npy")
    np.savez(tmp_path / "archive.npz", z=np.zeros((2, 3)))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    _error(capsys, "--latents cannot read", "decode", run, "--latents", tmp_path / "archive.npy", "--out",
           tmp_path / "x.npy")
    _error(capsys, "--latents must end in .npy or .csv", "decode", run, "--latents", tmp_path / "z.txt", "--out",
           tmp_path / "x.npy")
    (tmp_path / "named.csv").write_bytes(b"\xef\xbb\xbfz0,z1,z2\n0,0,0\n1,1,1\n")  # a spreadsheet's header and mark
    code, err = _cli(capsys, "decode", run, "--latents", tmp_path / "named.csv", "--out", tmp_path / "named.npy")
    assert code == 0 and np.load(tmp_path / "named.npy").shape == (2, 3), err
    np.save(tmp_path / "good.npy", np.zeros((2, 3)))
    _error(capsys, "a .png grid needs an image model", "decode", run, "--latents", tmp_path / "good.npy", "--out",
           tmp_path / "x.png")
    assert not (tmp_path / "x.npy").exists()


def test_a_conditional_run_encodes_under_each_rows_context_and_decodes_under_a_given_one(tmp_path, capsys) -> None:
    run = tmp_path / "cond"
    assert main(["train", "--data", "engine-gauss", "-d", "conditional=true", "-m", "layers=2", "-m", "hidden=[8]",
                 *FAST, "--out", str(run)]) == 0
    capsys.readouterr()
    code, err = _cli(capsys, "encode", run, "--out", tmp_path / "z.npy")
    assert code == 0 and "note: each row was encoded under its own context" in err, err
    _error(capsys, "this flow is conditional: pass --context FILE.npy with 3 values per sample", "decode", run,
           "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.npy")
    bundle = invertible.data.load("engine-gauss", seed=0, conditional=True)
    np.save(tmp_path / "c.npy", bundle.test_context.numpy())
    code, _ = _cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--context", tmp_path / "c.npy", "--out",
                   tmp_path / "x.npy")
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), bundle.test.numpy(), atol=1e-4)


def test_image_latents_are_reproducible_and_decode_to_the_pixels(tmp_path, capsys) -> None:
    run = tmp_path / "glow"
    assert main(["train", "--model", "glow", "--data", "digits", "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4",
                 *FAST, "--out", str(run)]) == 0
    capsys.readouterr()
    assert _cli(capsys, "encode", run, "--out", tmp_path / "z.npy")[0] == 0
    assert _cli(capsys, "encode", run, "--batch-size", "5", "--out", tmp_path / "again.npy")[0] == 0
    z = np.load(tmp_path / "z.npy")
    bundle = invertible.data.load("digits", seed=0)
    assert z.shape == (len(bundle.test), 1, 8, 8)
    # seeded dequantization noise: the same latents in any batch size (up to the float rounding of the kernels,
    # which may differ with the batch size; other noise would move them by far more)
    np.testing.assert_allclose(z, np.load(tmp_path / "again.npy"), rtol=1e-5, atol=1e-6)
    code, _ = _cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--raw", "--out", tmp_path / "x.npy")
    assert code == 0  # the dequantized pixels come back: integer part, the pixel; the rest, its noise
    np.testing.assert_array_equal(np.floor(np.load(tmp_path / "x.npy") + 1e-4), bundle.test.numpy())
    code, err = _cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "grid.png")
    assert code == 0 and (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG" and "decoded points" in err


def test_models_without_one_latent_space_are_refused(tmp_path, capsys) -> None:
    bits = tmp_path / "bits.csv"
    np.savetxt(bits, (np.random.default_rng(0).random((200, 4)) < 0.4).astype(float), delimiter=",")
    bern = tmp_path / "bern"
    assert main(["train", "--model", "bernoulli_made", "--data", str(bits), "-d", "standardize=false", "-m",
                 "hidden=[8]", *FAST, "--out", str(bern)]) == 0
    capsys.readouterr()
    _error(capsys, "holds a BernoulliMADE, a model of discrete data with no latent space", "encode", bern, "--out",
           tmp_path / "z.npy")
    np.save(tmp_path / "z.npy", np.zeros((2, 4)))
    _error(capsys, "holds a BernoulliMADE, a model of discrete data with no latent space", "decode", bern,
           "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.npy")
    pool = tmp_path / "pool"
    assert main(["train", "--model", "made", "--data", "engine-gauss", "-m", "hidden=[8]", "-m", "masks=2", *FAST,
                 "--out", str(pool)]) == 0
    capsys.readouterr()
    np.save(tmp_path / "z2.npy", np.zeros((2, 2)))
    _error(capsys, "this MADE is a pool of 2 mask sets", "decode", pool, "--latents", tmp_path / "z2.npy", "--out",
           tmp_path / "x.npy")
    _error(capsys, "this MADE is a pool of 2 mask sets", "encode", pool, "--out", tmp_path / "z.npy")


def test_encode_of_the_runs_own_data_names_the_order_of_its_splits(table_run, tmp_path, capsys) -> None:
    """``--split all`` of the run's own dataset is its three splits in turn, not the file's order, which the
    message "every row of table.csv" let a user assume when lining the latents up with the file's rows."""
    run, path = table_run
    code, err = _cli(capsys, "encode", run, "--split", "all", "--out", tmp_path / "z.npy")
    assert code == 0 and (f"wrote the latents of 300 rows (the train, val and test splits of {path}, in that order)"
                          in err), err
    code, err = _cli(capsys, "encode", run, "--out", tmp_path / "t.npy")
    assert code == 0 and f"(the test split of {path})" in err, err
    code, err = _cli(capsys, "eval", run, "--split", "all", "--per-row", tmp_path / "p.npy")
    assert code == 0 and f"wrote the log-densities of 300 rows (the train, val and test splits of {path}, in that order)" \
        in err, err
