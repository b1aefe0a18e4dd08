"""What the ``sample``, ``eval``, ``fit-density``, ``models`` and ``datasets`` commands compute, checked against the
library: the defaults of their options (``-n 1000``, ``--seed 0``, ``--temperature 1``, ``--draws 1``, fit-density's
steps, batch and family), the options that must reach the library (``--label``'s one-hot class and its temperature,
eval's ``--seed``, ``--split``, ``--draws``), the contents of the files they write (samples, ``--per-row``
log-densities, ``--out`` JSON, .png grids and their titles), the listings' lines, and the command line itself: bad
input refused with one ``error:`` line and exit status 2 before anything is written, no command (2), an interrupt
(130), ``--traceback``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible.cli import main
from invertible.data import DataBundle, register_dataset
from invertible.train.build import load_bundle, restore_preprocess
from invertible.train.evaluate import split_log_densities

TRAIN = ["train", "--data", "engine-gauss", "-m", "layers=2", "-m", "hidden=[8]", "--steps", "10",
         "--batch-size", "32", "--eval-every", "5", "--no-progress", "--no-plots"]
#: A class-conditional MAF on the 10 digit classes of ``digits_vectors`` (one-hot contexts).
DIGITS = ["train", "--data", "digits_vectors", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2",
          "--batch-size", "32", "--no-progress", "--no-plots"]


@register_dataset("semantics-images")
def semantics_images(seed: int = 0, levels: int | None = None) -> DataBundle:
    """Continuous 1x4x4 images in ``[0, 7]`` with no preprocessing: of 8 levels per pixel, or of none."""
    x = 7 * torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return DataBundle("semantics-images", x[:48], x[48:56], x[56:], levels=levels)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error(capsys, words: str, *argv) -> None:
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and words in err, err


@pytest.fixture(scope="module")
def gauss(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gauss") / "run"
    assert main([*TRAIN, "--out", str(run), "--seed", "1"]) == 0
    return run


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main([*DIGITS, "--out", str(run)]) == 0
    return run


def _latents(run: Path, x: np.ndarray, context: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return invertible.load(run).transform(torch.as_tensor(x), context)[0]


# --- sample -------------------------------------------------------------------------------------------------------

def test_sample_defaults_are_1000_draws_of_seed_0_at_temperature_1(gauss, tmp_path, capsys):
    code, _, err = _cli(capsys, "sample", gauss, "--out", tmp_path / "s.npy")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    flow = invertible.load(gauss)
    torch.manual_seed(0)
    with torch.no_grad():
        expected = flow.sample(1000)
    assert samples.shape == (1000, 2) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, expected.numpy())


@pytest.mark.parametrize("temperature", ["0", "-1", "inf", "nan"])
def test_sample_refuses_a_temperature_that_is_not_finite_and_positive(gauss, tmp_path, capsys, temperature):
    _error(capsys, "--temperature must be a finite number > 0", "sample", gauss, "--temperature", temperature,
           "--out", tmp_path / "s.npy")
    assert not (tmp_path / "s.npy").exists()


def test_sample_label_is_the_one_hot_context_of_that_class(digits, tmp_path, capsys):
    """``--label 3`` draws ``f^-1(T u; c)`` with ``c`` the one-hot vector of class 3: the library's draw under that
    context with the same seed, and at half the temperature half its latents."""
    code, _, err = _cli(capsys, "sample", digits, "-n", 6, "--label", 3, "--seed", 2, "--out", tmp_path / "s.npy")
    assert code == 0 and "wrote 6 samples of shape (64,)" in err, err
    _cli(capsys, "sample", digits, "-n", 6, "--label", 3, "--seed", 2, "--temperature", 0.5, "--out", tmp_path / "c.npy")
    context = torch.nn.functional.one_hot(torch.full((6,), 3), 10).float()
    flow = invertible.load(digits)
    torch.manual_seed(2)
    with torch.no_grad():
        expected = flow.sample(1, context)[0]
    samples = np.load(tmp_path / "s.npy")
    np.testing.assert_array_equal(samples, expected.numpy())
    u, u_cold = _latents(digits, samples, context), _latents(digits, np.load(tmp_path / "c.npy"), context)
    torch.testing.assert_close(u_cold, 0.5 * u, atol=1e-5, rtol=1e-4)


def test_sample_of_a_class_conditional_flow_needs_one_context(digits, tmp_path, capsys):
    out = tmp_path / "s.npy"
    _error(capsys, "this flow is class-conditional: pass --label K (K in 0..9)", "sample", digits, "--out", out)
    np.save(tmp_path / "c.npy", np.eye(10)[4])
    _error(capsys, "give --label or --context, not both", "sample", digits, "--label", 4, "--context", tmp_path / "c.npy",
           "--out", out)
    for label in ("10", "-1", "x"):
        _error(capsys, f"--label {label} is not a class of this flow: its labels are 0..9", "sample", digits,
               "--label", label, "--out", out)
    np.save(tmp_path / "z.npy", np.eye(10)[4] * (1 + 1j))
    _error(capsys, "holds values of dtype complex128; expected real numbers", "sample", digits, "--context",
           tmp_path / "z.npy", "--out", out)
    assert not out.exists()
    code, _, err = _cli(capsys, "sample", digits, "-n", 5, "--seed", 1, "--context", tmp_path / "c.npy", "--out", out)
    assert code == 0, err  # the one-hot vector of class 4 given as a --context: the draws of --label 4
    _cli(capsys, "sample", digits, "-n", 5, "--seed", 1, "--label", 4, "--out", tmp_path / "l.npy")
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "l.npy"))


def test_sample_label_of_a_bare_saved_model(digits, tmp_path, capsys):
    """A directory written by ``flow.save`` records no summary, so nothing says its contexts were not one-hot:
    ``--label`` is taken, as the one-hot context of that class."""
    flow = invertible.load(digits)
    flow.save(tmp_path / "bare")
    code, _, err = _cli(capsys, "sample", tmp_path / "bare", "-n", 3, "--label", 7, "--seed", 4, "--out", tmp_path / "s.npy")
    assert code == 0, err
    torch.manual_seed(4)
    with torch.no_grad():
        expected = flow.sample(1, torch.nn.functional.one_hot(torch.full((3,), 7), 10).float())[0]
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), expected.numpy())


# --- eval ---------------------------------------------------------------------------------------------------------

def _library_log_p(run: Path, data: str, seed: int, split: str) -> np.ndarray:
    """``log p(x)`` (nats, raw space) of the rows of ``split`` of dataset ``data`` loaded with ``seed``, by the
    library: the run's flow at the rows mapped by the run's preprocessing, plus that map's log-det."""
    bundle = restore_preprocess(load_bundle(data, seed, {}), run)
    x = getattr(bundle, split).double()
    ladj = torch.zeros(len(x), dtype=torch.float64)
    if bundle.preprocess is not None:
        x, ladj = bundle.preprocess.double()(x)
    with torch.no_grad():
        return (invertible.load(run).log_prob(x.float()).double() + ladj).numpy()


def test_eval_nll_is_minus_the_mean_log_prob_of_the_split(gauss, tmp_path, capsys):
    """The test NLL is ``-mean log p(x)`` over the run's own test split (its seed, 1), ``--per-row`` holds the
    ``log p(x)`` of every row in split order, and ``--out`` holds what stdout shows."""
    code, out, err = _cli(capsys, "eval", gauss, "--out", tmp_path / "e.json", "--per-row", tmp_path / "r.npy")
    assert code == 0, err
    result = json.loads(out)
    expected = _library_log_p(gauss, "engine-gauss", 1, "test")
    assert set(result) == {"data", "split", "rows", "test_nll", "kl_gap"}
    assert (result["data"], result["split"], result["rows"]) == ("engine-gauss", "test", len(expected))
    assert result["test_nll"] == pytest.approx(-expected.mean(), rel=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), expected, rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "e.json").read_text()) == result


def test_eval_seed_and_split_choose_the_rows_scored(gauss, capsys):
    code, out, err = _cli(capsys, "eval", gauss, "--seed", 5, "--split", "train", "--batch-size", 7)
    assert code == 0, err
    result = json.loads(out)
    expected = _library_log_p(gauss, "engine-gauss", 5, "train")
    assert result["split"] == "train" and result["rows"] == len(expected)
    assert result["train_nll"] == pytest.approx(-expected.mean(), rel=1e-5)
    own = json.loads(_cli(capsys, "eval", gauss, "--split", "train")[1])
    assert own["train_nll"] != pytest.approx(result["train_nll"], rel=1e-6)  # seed 5 is not the run's seed 1


def test_eval_split_all_of_a_dataset_name_is_its_three_splits(gauss, capsys):
    """``--data NAME --split all`` loads the dataset as for training (the run's seed) and scores its train, val
    and test splits together, not a file of that name read row by row."""
    code, out, err = _cli(capsys, "eval", gauss, "--data", "engine-gauss", "--split", "all")
    assert code == 0, err
    result = json.loads(out)
    expected = np.concatenate([_library_log_p(gauss, "engine-gauss", 1, s) for s in ("train", "val", "test")])
    assert (result["data"], result["split"], result["rows"]) == ("engine-gauss", "all", len(expected))
    assert result["all_nll"] == pytest.approx(-expected.mean(), rel=1e-5)


def test_eval_bad_options_are_refused_before_anything_is_written(gauss, tmp_path, capsys):
    out = tmp_path / "e.json"
    _error(capsys, "--batch-size must be >= 1, got 0", "eval", gauss, "--batch-size", 0, "--out", out)
    _error(capsys, "eval takes no model options", "eval", gauss, "-m", "layers=3", "--out", out)
    _error(capsys, "--per-row must end in .npy or .csv, got 'r.txt'", "eval", gauss, "--per-row", tmp_path / "r.txt",
           "--out", out)
    assert not out.exists()


PIXELS = ["train", "--model", "glow", "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4", "--data", "engine-pixels",
          "--steps", "4", "--batch-size", "24", "--eval-every", "4", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> Path:
    """A tiny Glow on 8-level 1x4x4 images, scored with dequantization noise."""
    run = tmp_path_factory.mktemp("pixels") / "run"
    assert main([*PIXELS, "--out", str(run)]) == 0
    return run


def test_eval_draws_default_to_one_and_reach_the_library(pixels, capsys):
    """Image data are scored with seeded dequantization noise: by default one draw, and ``--draws 3`` the
    library's average over three."""
    one, default, three = (json.loads(_cli(capsys, "eval", pixels, *draws)[1]) for draws in
                           (["--draws", "1"], [], ["--draws", "3"]))
    assert default == one and default["test_nll"] != three["test_nll"]
    bundle = restore_preprocess(load_bundle("engine-pixels", 0, {}), pixels)
    log_p, _ = split_log_densities(invertible.load(pixels), bundle, "test", 1024, torch.device("cpu"), 3)
    assert three["test_nll"] == pytest.approx(-log_p.mean().item(), rel=1e-6)
    assert three["test_bpd"] == pytest.approx(three["test_nll"] / (16 * math.log(2)))


def test_sample_writes_a_grid_for_an_upper_case_png_suffix(pixels, tmp_path, capsys):
    code, _, err = _cli(capsys, "sample", pixels, "-n", 4, "--out", tmp_path / "GRID.PNG")
    assert code == 0 and "wrote a grid of 4 samples" in err, err
    assert (tmp_path / "GRID.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- fit-density --------------------------------------------------------------------------------------------------

def test_fit_density_defaults(tmp_path, monkeypatch, capsys):
    """Without options: a planar flow of FAMILIES["planar"] layers, fitted with seed 0 by the reparameterised
    ELBO over 10000 steps of 256 samples at lr 1e-3, no annealing, ``log Z`` from 100000 samples, the
    curve recorded every 500 steps."""
    import invertible.variational as variational
    from invertible.variational import FAMILIES
    from invertible.transforms import Planar as PlanarLayer

    seen = {}

    def spy(q, target, **options):
        seen.update(options, seed=torch.initial_seed(), target=target.name, layers=[type(t) for t in q.transform])
        raise ValueError("stopped by the test")

    monkeypatch.setattr(variational, "fit", spy)
    _error(capsys, "stopped by the test", "fit-density", "--target", "u3", "--out", tmp_path / "out")
    seen.pop("callback")
    assert seen == {"steps": 10_000, "batch_size": 256, "lr": 1e-3, "estimator": "reparam", "anneal_steps": 0,
                    "eval_samples": 100_000, "log_every": 500, "seed": 0, "target": "u3",
                    "layers": [PlanarLayer] * FAMILIES["planar"]}


def test_sample_grid_title_names_the_model_and_temperature(pixels, tmp_path, monkeypatch, capsys):
    import invertible.plots as plots

    titles = []
    real = plots.image_grid
    monkeypatch.setattr(plots, "image_grid", lambda pixels, title: titles.append(title) or real(pixels, title=title))
    code, _, err = _cli(capsys, "sample", pixels, "-n", 4, "--temperature", 0.7, "--out", tmp_path / "g.png")
    assert code == 0 and titles == ["glow samples, T = 0.7"], err


# --- models, datasets ---------------------------------------------------------------------------------------------

def test_listings_give_each_entry_the_first_line_of_its_docstring(capsys):
    from invertible import models
    from invertible.data.registry import DATASETS

    code, out, _ = _cli(capsys, "models")
    shown = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and set(shown) == set(models.available())
    for name, text in shown.items():
        assert text == models.get(name).__doc__.strip().splitlines()[0].replace("``", ""), name
    code, out, _ = _cli(capsys, "datasets")
    *rows, files = out.splitlines()
    assert code == 0 and files == ("files:           (no suffix: IDX files, MNIST, CIFAR-10 or PNG directories), .csv, .gz, "
                                   ".idx3-ubyte, .idx3-ubyte.gz, .npy")
    for name, text in (line.split(None, 1) for line in rows):
        assert text == DATASETS[name].__doc__.strip().splitlines()[0].replace("``", ""), name


def test_datasets_describes_a_file_suffix_in_any_case(capsys):
    code, lower, _ = _cli(capsys, "datasets", ".csv")
    code_upper, upper, _ = _cli(capsys, "datasets", ".CSV")
    assert code == code_upper == 0 and upper == lower and "context_columns" in upper


def test_datasets_describes_the_reader_of_a_path(tmp_path, capsys):
    """A directory of images (or any path) has no suffix to name: its reader's options were reachable only as
    ``invertible datasets ""``; a path names it."""
    (tmp_path / "t.CSV").write_text("a,b\n1,2\n")
    code, by_path, _ = _cli(capsys, "datasets", tmp_path / "t.CSV")
    assert code == 0 and by_path.replace(str(tmp_path / "t.CSV"), ".csv") == _cli(capsys, "datasets", ".csv")[1]
    code, folder, _ = _cli(capsys, "datasets", tmp_path)
    assert code == 0 and "a folder of PNGs" in folder and "dequantization" in folder
    code, _, err = _cli(capsys, "datasets", tmp_path / "missing.md")
    assert code == 2 and "unknown dataset or file suffix" in err


# --- the command line itself and the shared helpers ---------------------------------------------------------------

def test_no_command_prints_the_help_and_exits_2(capsys):
    code, out, err = _cli(capsys)
    assert code == 2 and out == "" and err.startswith("usage: invertible") and "commands:" in err


def test_each_error_and_stop_line_is_one_write(monkeypatch):
    """``print`` wrote the text and its newline apart: the ranks of a distributed run, sharing standard error,
    interleaved their stop lines between the two ("...--resumestopped by SIGTERM...")."""
    import io
    import sys

    from invertible.cli import main

    class Writes(io.StringIO):
        calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Writes())
    assert main(["train", "--model", "nope", "--data", "moons"]) == 2
    assert sys.stderr.calls == [sys.stderr.getvalue()] and sys.stderr.getvalue().startswith("error: ")


def test_traceback_shows_the_error_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--traceback", "eval", str(tmp_path / "missing")])


def test_an_interrupt_exits_130_with_a_hint_where_the_command_resumes(monkeypatch, capsys):
    """Exit 130; ``train``, which checkpoints, says to resume; a command with nothing to resume says only that."""
    from invertible.commands import models, train

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "run", interrupted)
    monkeypatch.setattr(train, "run", interrupted)
    code, out, err = _cli(capsys, "models")
    assert code == 130 and out == "" and err == "interrupted\n"
    code, out, err = _cli(capsys, "train", "--data", "gaussian")
    assert code == 130 and out == "" and err == "interrupted; continue the run with --resume\n"


def test_run_and_out_paths_that_are_files(gauss, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    _error(capsys, f"{tmp_path / 'file'} is not a run directory", "sample", tmp_path / "file", "--out", tmp_path / "s.npy")
    _error(capsys, f"--out {tmp_path / 'file'} is a file, not a directory", "fit-density", "--target", "u1",
           "--out", tmp_path / "file")
    code, _, err = _cli(capsys, "sample", gauss, "-n", 3, "--out", tmp_path / "S.NPY")  # the suffix in any case
    assert code == 0 and np.load(tmp_path / "S.NPY").shape == (3, 2), err


def test_corrupt_run_records_are_named(digits, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "class_names": ["a", "a"] + summary["class_names"][2:]}))
    _error(capsys, "class_names must be a list of distinct names", "sample", run, "--label", 1, "--out", tmp_path / "s.npy")
    (run / "config.yaml").write_text("- data\n- seed\n")
    _error(capsys, f"corrupt run config {run / 'config.yaml'}: expected a mapping", "eval", run)


def test_a_label_error_names_only_labels_when_the_class_names_are_the_labels(digits, tmp_path, capsys):
    code, _, err = _cli(capsys, "sample", digits, "--label", 10, "--out", tmp_path / "s.npy")
    assert code == 2 and err == "error: --label 10 is not a class of this flow: its labels are 0..9\n"


def test_a_grid_takes_its_levels_from_the_data_when_the_run_stores_none(tmp_path, capsys):
    """A run without preprocessing stores no levels: a .png grid reads them from its dataset, and data of no
    discrete levels give no grid."""
    argv = [*PIXELS[:9], "--data", "semantics-images", *PIXELS[11:]]
    for levels in ("8", "null"):
        assert main([*argv, "-d", f"levels={levels}", "--out", str(tmp_path / levels)]) == 0
    capsys.readouterr()
    code, _, err = _cli(capsys, "sample", tmp_path / "8", "-n", 4, "--out", tmp_path / "g.png")
    assert code == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG", err
    _error(capsys, "a .png grid needs images of discrete levels", "sample", tmp_path / "null", "-n", 4,
           "--out", tmp_path / "h.png")


def test_an_older_run_undoes_its_standardisation_with_its_own_seeds_split(tmp_path, capsys):
    """A run that stores no preprocessing (written before runs kept it) maps ``--raw`` samples back by the
    standardisation of its training split, loaded with the run's seed (3): the stored statistics' samples."""
    import shutil

    from invertible.train.build import PREPROCESS_JSON, PREPROCESS_WEIGHTS

    rng = np.random.default_rng(0)
    np.save(tmp_path / "t.npy", rng.normal(size=(60, 2)) * [3.0, 0.2] + [10.0, -4.0])
    run = tmp_path / "run"
    assert main([*TRAIN[:1], "--data", str(tmp_path / "t.npy"), *TRAIN[3:], "--seed", "3", "--out", str(run)]) == 0
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_JSON).unlink()
    (old / PREPROCESS_WEIGHTS).unlink()
    capsys.readouterr()
    for source, out in ((run, "new.npy"), (old, "old.npy")):
        code, _, err = _cli(capsys, "sample", source, "-n", 5, "--raw", "--out", tmp_path / out)
        assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "old.npy"), np.load(tmp_path / "new.npy"), rtol=1e-5)


def test_eval_refuses_draws_on_data_without_dequantization_noise(gauss, capsys):
    """``--draws K`` averages fresh dequantization noise of raw pixels; a table has none, so ``--draws 3`` would
    print the one-draw figure as if it were an average: it is refused in one line."""
    _error(capsys, "--draws 3 averages dequantization noise draws of raw pixels, but engine-gauss is scored as it is",
           "eval", gauss, "--draws", 3)


def test_eval_on_a_table_of_other_classes_names_them_as_plain_strings(tmp_path, capsys):
    """Class names read from a dataset are numpy strings, and the refusal of classes the run does not know showed
    them as np.str_('malignant'); it shows them as the names they are."""
    run = tmp_path / "run"
    assert main(["train", "--data", "wine", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2",
                 "--batch-size", "32", "--no-progress", "--no-plots", "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["eval", str(run), "--data", "breast_cancer"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: "), err
    assert "holds class(es) 'malignant', 'benign' that the model does not know" in err, err
    assert "its classes are 'class_0', 'class_1', 'class_2'" in err and "np.str_" not in err, err
