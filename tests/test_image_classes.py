"""Class names of image data: a PNG folder's class sub-folders name its labels, and data read for a trained
class-conditional run take the run's label index of each class by name, not their position in the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from invertible import load as load_flow
from invertible.cli import main
from invertible.commands._common import run_bundle
from invertible.data import load, load_rows
from invertible.data.images import one_hot, relabel_classes
from invertible.train.build import read_preprocess_record, rebuild_preprocess
from invertible.train.evaluate import EVAL_NOISE_SEED, seeded_rng

from .test_images import _write_idx


def _pngs(folder: Path, classes: dict[str, int], levels: int = 8, seed: int = 0) -> None:
    """``classes[name]`` random 1x4x4 grey PNGs of ``levels`` levels in sub-folder ``name`` of ``folder``."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, levels, (4, 4), dtype=np.uint8)).save(folder / name / f"{i:02d}.png")


def test_a_png_folder_names_its_classes_by_its_sub_folders(tmp_path) -> None:
    _pngs(tmp_path / "abc", {"a": 2, "b": 2, "c": 2})
    bundle = load(str(tmp_path / "abc"), conditional=True, test_fraction=0.0, val_fraction=0.0)
    assert bundle.class_names == ["a", "b", "c"]
    assert load("digits").class_names == [str(i) for i in range(10)]


def test_rows_of_a_folder_take_the_label_index_of_their_class_name(tmp_path) -> None:
    _pngs(tmp_path / "bc", {"b": 2, "c": 1})
    _, context = load_rows(tmp_path / "bc", conditional=True, classes=["a", "b", "c"])
    assert context.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert load_rows(tmp_path / "bc", conditional=True, classes=3)[1].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    _pngs(tmp_path / "bd", {"b": 1, "d": 1})
    with pytest.raises(ValueError, match=r"bd holds class\(es\) 'd' that the model does not know; its classes are "
                                         r"'a', 'b', 'c'"):
        load_rows(tmp_path / "bd", conditional=True, classes=["a", "b", "c"])


def test_a_bundle_is_relabelled_by_class_name(tmp_path) -> None:
    _pngs(tmp_path / "cb", {"b": 3, "c": 3})
    bundle = load(str(tmp_path / "cb"), conditional=True, test_fraction=0.3, val_fraction=0.2)
    moved = relabel_classes(bundle, ["a", "b", "c"])
    assert moved.class_names == ["a", "b", "c"] and moved.context_features == 3
    for split in ("train", "val", "test"):
        before, after = getattr(bundle, f"{split}_context"), getattr(moved, f"{split}_context")
        assert torch.equal(after[:, 0], torch.zeros(len(after))) and torch.equal(after[:, 1:], before)
        assert torch.equal(getattr(moved, split), getattr(bundle, split))
    assert relabel_classes(bundle, None) is bundle and relabel_classes(bundle, ["b", "c"]) is bundle
    with pytest.raises(ValueError, match=r"dataset 'cb' holds class\(es\) 'c' that the model does not know"):
        relabel_classes(bundle, ["a", "b"])


def test_numeric_labels_are_named_by_their_digits(tmp_path) -> None:
    """IDX labels 0..9 are the classes "0".."9": a file whose largest label is 3 still reads as 10 classes."""
    digits = [str(i) for i in range(10)]
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 0, 3], np.uint8), False)
    _, context = load_rows(tmp_path / "t10k-images-idx3-ubyte", conditional=True, classes=digits)
    assert context.argmax(1).tolist() == [3, 0, 3] and context.shape == (3, 10)
    bundle = load(str(tmp_path / "t10k-images-idx3-ubyte"), conditional=True, test_fraction=0.0, val_fraction=0.0)
    assert bundle.class_names == ["0", "1", "2", "3"]
    assert torch.equal(relabel_classes(bundle, digits).train_context.argmax(1), bundle.train_context.argmax(1))
    with pytest.raises(ValueError, match=r"holds class\(es\) '3' that the model does not know; its classes are '0', '1'"):
        load_rows(tmp_path / "t10k-images-idx3-ubyte", conditional=True, classes=["0", "1"])


TRAIN = ["train", "--model", "glow", "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4", "--steps", "4",
         "--batch-size", "8", "--eval-every", "4", "--no-progress", "--no-plots", "-d", "conditional=true"]


@pytest.fixture(scope="module")
def abc_run(tmp_path_factory) -> Path:
    """A tiny class-conditional Glow on a folder of 1x4x4 PNGs of classes a, b and c."""
    root = tmp_path_factory.mktemp("classes")
    _pngs(root / "abc", {"a": 4, "b": 4, "c": 4}, levels=256)
    assert main([*TRAIN, "--data", str(root / "abc"), "--out", str(root / "run")]) == 0
    return root / "run"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _by_hand(run: Path, images: Tensor, labels: list[int]) -> np.ndarray:
    """``log P(x)`` of raw ``images`` under the run's flow with one-hot ``labels``: the run's dequantization and
    logit with eval's seeded noise (one draw), the flow's log-density plus the log-det."""
    preprocess = rebuild_preprocess(read_preprocess_record(run), run)
    context = one_hot(np.array(labels), load_flow(run).context_features)
    with torch.no_grad(), seeded_rng(EVAL_NOISE_SEED, torch.device("cpu")):
        y, ladj = preprocess(images)
        return (load_flow(run).log_prob(y, context).double() + ladj.double()).numpy()


def test_a_conditional_run_records_its_class_names(abc_run) -> None:
    assert json.loads((abc_run / "summary.json").read_text())["class_names"] == ["a", "b", "c"]


def test_a_folder_lacking_a_class_is_scored_under_the_runs_labels(abc_run, tmp_path, capsys) -> None:
    """Folder b, c: its images are classes 1 and 2 of the run, not 0 and 1 as their positions in the folder."""
    _pngs(tmp_path / "bc", {"b": 4, "c": 6}, levels=256, seed=1)
    images, _ = load_rows(tmp_path / "bc")
    code, out, err = _cli(capsys, "eval", abc_run, "--data", tmp_path / "bc", "--split", "all",
                          "--per-row", tmp_path / "all.npy")
    assert code == 0, err
    expected = _by_hand(abc_run, images, [1] * 4 + [2] * 6)
    np.testing.assert_allclose(np.load(tmp_path / "all.npy"), expected, rtol=1e-6)
    assert json.loads(out)["all_nll"] == pytest.approx(-expected.mean(), rel=1e-6)
    assert not np.allclose(_by_hand(abc_run, images, [0] * 4 + [1] * 6), expected, rtol=1e-6)  # the labels matter

    code, _, err = _cli(capsys, "eval", abc_run, "--data", tmp_path / "bc", "-d", "conditional=true",
                        "-d", "test_fraction=0.4", "--per-row", tmp_path / "test.npy")
    assert code == 0, err
    split = load(str(tmp_path / "bc"), conditional=True, test_fraction=0.4)
    labels = (split.test_context.argmax(1) + 1).tolist()
    np.testing.assert_allclose(np.load(tmp_path / "test.npy"), _by_hand(abc_run, split.test, labels), rtol=1e-6)


def test_a_class_the_run_does_not_know_is_refused(abc_run, tmp_path, capsys) -> None:
    _pngs(tmp_path / "bd", {"b": 5, "d": 5}, levels=256)
    for extra in ([], ["-d", "conditional=true", "-d", "test_fraction=0.4"]):
        split = [] if extra else ["--split", "all"]
        code, out, err = _cli(capsys, "eval", abc_run, "--data", tmp_path / "bd", *split, *extra)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "holds class(es) 'd' that the model does not know; its classes are 'a', 'b', 'c'" in err


def test_interpolate_reads_the_runs_own_folder_by_class_name(tmp_path, capsys) -> None:
    _pngs(tmp_path / "abc", {"a": 6, "b": 6, "c": 6}, levels=256)
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(tmp_path / "abc"), "--out", str(run), "-d", "test_fraction=0.5",
                 "--batch-size", "4"]) == 0
    shutil.rmtree(tmp_path / "abc" / "a")  # the folder now holds two classes: b and c keep labels 1 and 2
    bundle = run_bundle(run, "a test")
    assert bundle.class_names == ["a", "b", "c"] and bundle.test_context[:, 0].sum() == 0
    assert _cli(capsys, "interpolate", run, "--pairs", "1", "--steps", "2", "--out", tmp_path / "i.png")[0] == 0
    _pngs(tmp_path / "abc", {"d": 4}, levels=256)
    code, _, err = _cli(capsys, "interpolate", run, "--pairs", "1", "--steps", "2", "--out", tmp_path / "i.png")
    assert code == 2 and "holds class(es) 'd' that the model does not know" in err


def test_a_run_without_class_names_reads_labels_as_before(abc_run, tmp_path, capsys) -> None:
    old = tmp_path / "old"
    shutil.copytree(abc_run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["class_names"]
    (old / "summary.json").write_text(json.dumps(summary))
    _pngs(tmp_path / "abc", {"a": 1, "b": 1, "c": 1}, levels=256, seed=2)
    images, _ = load_rows(tmp_path / "abc")
    assert _cli(capsys, "eval", old, "--data", tmp_path / "abc", "--split", "all", "--per-row", tmp_path / "r.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), _by_hand(old, images, [0, 1, 2]), rtol=1e-6)
    code, _, err = _cli(capsys, "sample", old, "--label", "b", "--out", tmp_path / "s.npy")
    assert code == 2 and "--label b is not a class of this flow: its labels are 0..2" in err


def test_sample_takes_a_class_name_for_its_label(abc_run, tmp_path, capsys) -> None:
    assert _cli(capsys, "sample", abc_run, "-n", "3", "--label", "b", "--out", tmp_path / "b.npy")[0] == 0
    assert _cli(capsys, "sample", abc_run, "-n", "3", "--label", "1", "--out", tmp_path / "1.npy")[0] == 0
    assert _cli(capsys, "sample", abc_run, "-n", "3", "--label", "0", "--out", tmp_path / "0.npy")[0] == 0
    assert np.array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "1.npy"))
    assert not np.array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "0.npy"))
    for bad in ("d", "3"):
        code, _, err = _cli(capsys, "sample", abc_run, "--label", bad, "--out", tmp_path / "x.npy")
        assert code == 2 and f"--label {bad} is not a class of this flow: its labels are 0..2 or the class names a, b, c" in err
    code, _, err = _cli(capsys, "sample", abc_run, "--out", tmp_path / "x.npy")
    assert code == 2 and "pass --label K (K in 0..2 or the class names a, b, c) or --context" in err


def _two_tone(folder: Path, count: int) -> None:
    """``count`` random 1x4x4 PNGs in each of sub-folders ``dark`` (pixels 0..99) and ``light`` (156..255)."""
    rng = np.random.default_rng(3)
    for name, low in (("dark", 0), ("light", 156)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(low, low + 100, (4, 4), dtype=np.uint8)).save(folder / name / f"{i:02d}.png")


def test_interpolate_joins_two_images_of_one_class_under_its_label(tmp_path, capsys, monkeypatch) -> None:
    """Each row of a class-conditional run's interpolations joins two test images of one class, encoded and
    decoded under that class's label; ``--label`` draws every pair from one class."""
    from invertible.commands import interpolate

    _two_tone(tmp_path / "tones", 8)
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(tmp_path / "tones"), "--out", str(run), "-d", "test_fraction=0.5",
                 "--batch-size", "4"]) == 0
    calls = []
    real = interpolate.latent_interpolation
    monkeypatch.setattr(interpolate, "latent_interpolation",
                        lambda flow, a, b, steps, context: calls.append((a, b, context)) or real(flow, a, b, steps, context))

    def rows(*options) -> tuple[Tensor, Tensor, Tensor]:
        """The tone of each row's two images (0 dark, 1 light: the sign of their mean in logit space) and its label."""
        code, _, err = _cli(capsys, "interpolate", run, "--steps", "2", "--out", tmp_path / "i.png", *options)
        assert code == 0, err
        a, b, context = calls.pop()
        return (a.flatten(1).mean(1) > 0).long(), (b.flatten(1).mean(1) > 0).long(), context.argmax(1)

    a, b, label = rows("--pairs", "4")  # the test split: 6 dark and 2 light images
    assert torch.equal(a, b) and torch.equal(a, label)
    assert sorted(a.tolist()) == [0, 0, 0, 1]
    for chosen, index, pairs in (("light", 1, 1), ("0", 0, 3)):
        a, b, label = rows("--pairs", str(pairs), "--label", chosen)
        assert a.tolist() == b.tolist() == label.tolist() == [index] * pairs
    for options, words in ((["--pairs", "5"], "the test split holds 4 pair(s) of images of one class, fewer than --pairs 5"),
                           (["--pairs", "2", "--label", "light"],
                            "the test split holds 1 pair(s) of images of class 'light', fewer than --pairs 2"),
                           (["--label", "grey"],
                            "--label grey is not a class of this flow: its labels are 0..1 or the class names dark, light")):
        code, _, err = _cli(capsys, "interpolate", run, *options, "--out", tmp_path / "i.png")
        assert code == 2 and words in err, err
    plain = tmp_path / "plain"
    assert main([*TRAIN[:-2], "--data", str(tmp_path / "tones"), "--out", str(plain), "-d", "test_fraction=0.5",
                 "--batch-size", "4"]) == 0
    code, _, err = _cli(capsys, "interpolate", plain, "--label", "light", "--out", tmp_path / "i.png")
    assert code == 2 and "this flow is unconditional; --label light needs a class-conditional flow" in err
