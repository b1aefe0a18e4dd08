"""Loading weights that do not fit the model's config: one line that says how they differ."""

from __future__ import annotations

import json
import shutil

import pytest

import invertible
from invertible.cli import main


def _config_without_digest(path) -> None:
    """Drop the weights' SHA-256 from ``model.json``, as in files saved before it was recorded."""
    config = json.loads((path / "model.json").read_text())
    config.pop("weights_sha256")
    (path / "model.json").write_text(json.dumps(config))


def test_weights_of_another_preset_are_named_in_one_line(tmp_path, capsys):
    invertible.models.build("realnvp", features=2, layers=2, hidden=[8]).save(tmp_path / "a")
    invertible.models.build("glow", event_shape=(1, 4, 4), levels=1, steps=1, hidden=4).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    _config_without_digest(tmp_path / "a")
    with pytest.raises(ValueError, match=r"do not fit model 'realnvp': 12 tensor\(s\) missing \(transform\.") as info:
        invertible.load(tmp_path / "a")
    message = str(info.value)
    assert "\n" not in message and len(message) < 600 and "unexpected" in message and "more)" in message
    assert main(["sample", str(tmp_path / "a"), "-n", "2", "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "do not fit model 'realnvp'" in err


def test_weights_of_other_widths_name_their_shapes(tmp_path):
    invertible.models.build("realnvp", features=2, layers=2, hidden=[8]).save(tmp_path / "a")
    invertible.models.build("realnvp", features=2, layers=2, hidden=[9]).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    _config_without_digest(tmp_path / "a")
    with pytest.raises(ValueError) as info:
        invertible.load(tmp_path / "a")
    message = str(info.value)
    assert "\n" not in message
    assert "6 of another shape (transform.transforms.0.conditioner.net.0.weight (saved (9, 1), model (8, 1))" in message


def test_a_file_that_is_not_a_saved_model_is_named(tmp_path, monkeypatch):
    """The README's torch.save(flow.state_dict(), "my-flow.pt") is a file that load does not read: said so,
    instead of a model.json the caller never named, or the model of the directory that holds the file."""
    import torch

    monkeypatch.chdir(tmp_path)
    flow = invertible.models.build("realnvp", features=2, layers=2, hidden=[8])
    torch.save(flow.state_dict(), "my-flow.pt")
    with pytest.raises(ValueError, match=r"my-flow\.pt is a file; invertible\.load reads the directory"):
        invertible.load("my-flow.pt")
    flow.save(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("a note")
    with pytest.raises(ValueError, match="notes.txt is a file"):
        invertible.load(tmp_path / "m" / "notes.txt")
    for name in ("model.json", "model.safetensors"):  # the model's own files name its directory
        assert invertible.load(tmp_path / "m" / name).config == flow.config
