"""MADE runs from the command line: training a Bernoulli MADE on a table of 0/1 columns read from a file."""

from __future__ import annotations

import numpy as np
import pytest

from invertible.cli import main

TRAIN = ["train", "--model", "bernoulli_made", "-m", "hidden=[8]", "--steps", "4", "--batch-size", "16",
         "--eval-every", "2", "--no-progress", "--no-plots", "--threads", "1"]


def _bits(rows: int = 200, constant: bool = False) -> np.ndarray:
    x = (np.random.default_rng(0).random((rows, 5)) < 0.3).astype(np.float64)
    if constant:
        x[:, 2] = 0.0  # a pixel that is always off: fine for a Bernoulli MADE, but standardising it fails
    return x


@pytest.mark.parametrize("constant", [False, True], ids=["varying", "constant-column"])
def test_a_binary_table_names_the_standardisation_that_a_bernoulli_made_cannot_take(tmp_path, capsys, constant):
    """A table is standardised by default, so a file of 0/1 columns reached the Bernoulli MADE as other values (or
    failed to standardise a constant column) with an error that did not say why: the error names the option
    that reads the table as it is, and with it the run trains."""
    np.save(tmp_path / "bits.npy", _bits(constant=constant))
    code = main([*TRAIN, "--data", str(tmp_path / "bits.npy"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "-d standardize=false" in err
    code = main([*TRAIN, "--data", str(tmp_path / "bits.npy"), "--out", str(tmp_path / "run"), "-d", "standardize=false"])
    assert code == 0, capsys.readouterr().err


def test_a_table_that_is_not_binary_gets_no_standardisation_hint(tmp_path, capsys):
    np.save(tmp_path / "halves.npy", _bits() / 2 + 0.25)
    code = main([*TRAIN, "--data", str(tmp_path / "halves.npy"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "BernoulliMADE models binary data" in err and "standardize" not in err, err


def test_digit_vectors_that_are_not_binary_name_the_option_that_binarizes_them(tmp_path, capsys):
    """digits_vectors holds 17 grey levels unless read with -d binarize=true: the Bernoulli MADE's refusal named
    none of its options, so the error gave no way forward; it names that one, and with it the run trains."""
    args = [*TRAIN, "--data", "digits_vectors", "--out", str(tmp_path / "run")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "BernoulliMADE models binary data" in err and "-d binarize=true" in err, err
    assert main([*args, "-d", "binarize=true"]) == 0, capsys.readouterr().err


def test_a_dataset_with_no_binarize_option_gets_no_binarize_hint(capsys, tmp_path):
    code = main([*TRAIN, "--data", "moons", "-d", "n_train=64", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "BernoulliMADE models binary data" in err and "binarize" not in err, err
