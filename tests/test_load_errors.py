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


@pytest.mark.parametrize("edit, message", [
    (lambda k, v: v.fill_(1.0) if k.endswith("layers.1.mask") else v,
     "the loaded masks are not those of the loaded degrees"),  # a dense MADE: not autoregressive
    (lambda k, v: v.fill_(7) if k.endswith("net.degrees") else v, r"input degrees \[7, 7, 7\] are not a permutation"),
    (lambda k, v: v.fill_(5) if k.endswith("hidden_degrees_0") else v, r"hidden layer 0 lie in 5..5, outside 1..2"),
])
def test_a_made_whose_masks_or_degrees_were_edited_is_refused(tmp_path, edit, message):
    """The weights file names its masks and degrees: edited (with the config's digest dropped) they loaded as they
    were, and a MAF with all-ones masks round-tripped ``decode(encode(x))`` 0.76 away from ``x``."""
    from safetensors.torch import load_file, save_file

    invertible.models.build("maf", features=3, layers=2, hidden=[8, 8]).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    save_file({k: edit(k, v.clone()) for k, v in load_file(weights).items()}, weights)
    _config_without_digest(tmp_path / "m")
    with pytest.raises(ValueError, match=rf"do not fit model 'maf': .*{message}"):
        invertible.load(tmp_path / "m")


def test_a_made_pool_whose_loaded_set_was_edited_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    invertible.models.build("made", features=3, hidden=[8], masks=4).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    tensors["mask_index"].fill_(99)
    save_file(tensors, weights)
    _config_without_digest(tmp_path / "m")
    with pytest.raises(ValueError, match=r"do not fit model 'made': the loaded mask set 99 is not in the pool of 4"):
        invertible.load(tmp_path / "m")
