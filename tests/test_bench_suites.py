"""Every benchmark suite listed by ``python -m bench`` imports and answers ``--help``."""

import importlib

import pytest

from bench.__main__ import main, suites


@pytest.mark.parametrize("name", suites())
def test_suite_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)


def test_unknown_suite_is_an_error(capsys) -> None:
    assert main(["no-such-suite"]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_quality_row_averages_entropy_over_the_same_seeds_as_the_nll() -> None:
    """Each seed has its own test split and so its own H(p): the row's H(p) is the mean over the
    seeds whose NLL is averaged, so ``test NLL - H(p)`` is the reported KL gap."""
    from bench.quality import summary_row

    runs = [
        {"nll": 3.0, "entropy": 2.80, "kl": 0.20, "params": 10},
        {"nll": 3.1, "entropy": 2.84, "kl": 0.26, "params": 10},
        {"nll": float("nan"), "entropy": 2.90, "kl": float("nan"), "params": 10},
    ]
    row = summary_row("8gaussians", "realnvp", "zuko", runs, ours=0.23)
    assert row["H(p) (nats)"] == pytest.approx(2.82)
    assert row["test NLL (nats)"] - row["H(p) (nats)"] == pytest.approx(row["KL gap (nats)"])
    assert row["diverged (NaN)"] == "1 of 3"
    assert row["KL gap per seed"] == "0.200 / 0.260 / nan"


def test_quality_table_is_consistent(tmp_path, monkeypatch) -> None:
    """A tiny end-to-end run: in the written table test NLL - H(p) equals the KL gap on every row
    (seeds 0 and 2 of 8gaussians have test entropies 0.006 nats apart at this size)."""
    import bench.common
    from bench.quality import main as quality

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    args = ["--data", "8gaussians", "--peers", "zuko", "--seeds", "0", "2", "--steps", "3", "--n-train", "512",
            "--layers", "2", "--hidden", "8", "--out", "q"]
    assert quality(args) == 0
    lines = [line for line in (tmp_path / "q.md").read_text().splitlines() if line.startswith("| 8gaussians")]
    assert len(lines) == 2
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        nll, h, kl = float(cells[4]), float(cells[5]), float(cells[6])
        assert nll - h == pytest.approx(kl, abs=2e-3)


def test_quality_ratio_survives_a_diverged_invertible_seed(monkeypatch, tmp_path) -> None:
    """``gap / invertible`` divides by the invertible row's own gap (finite seeds), not by a NaN."""
    import bench.quality as q

    def fake_run(model, library, spec, data, args, seed):
        kl = float("nan") if (library, seed) == ("invertible", 1) else 0.1 * (2 if library == "zuko" else 1)
        return {"nll": 3.0 + kl, "entropy": 3.0, "kl": kl, "train_s": 0.0, "params": 1}

    monkeypatch.setattr(q, "run_one", fake_run)
    rows = []
    monkeypatch.setattr(q, "table", lambda r: rows.extend(r) or "")
    monkeypatch.setattr("bench.common.RESULTS", tmp_path)
    assert q.main(["--data", "checkerboard", "--peers", "zuko", "--seeds", "0", "1", "--n-train", "64",
                   "--out", "q"]) == 0
    ratio = {r["library"]: r["gap / invertible"] for r in rows}
    assert ratio["invertible"] == pytest.approx(1.0) and ratio["zuko"] == pytest.approx(2.0)


def test_maf_speed_header_records_the_threads_it_times_with(monkeypatch) -> None:
    """The results header states the torch threads of the timing (always 2), not the process default."""
    import torch

    import bench.maf as maf

    written = {}
    monkeypatch.setattr(maf, "speed", lambda repeats, compile_=False, decompose=False, flow="maf": "")
    monkeypatch.setattr(maf, "write", lambda name, text: written.setdefault(name, text))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert maf.main(["speed", "--name", "x"]) == 0
    finally:
        torch.set_num_threads(before)
    assert "torch threads 2" in written["x"]
