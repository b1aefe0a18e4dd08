"""The benchmark suites as a user runs them: bad options are usage errors raised before any work,
a recorded results file is never overwritten without ``--force``, a missing peer names the
``bench`` extra, and the written ratios read peer time / ours."""

from __future__ import annotations

import argparse
import re
import sys

import pytest

import bench.common as common
from bench.__main__ import main


class _Ran(Exception):
    """Raised in place of the training or timing of a suite: the options were accepted."""


def _ran(*args, **kwargs):
    raise _Ran


@pytest.fixture(autouse=True)
def _threads():
    """The suites set torch's thread count: give the other tests back theirs."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A scratch ``bench/results`` holding one recorded file ``recorded.md``; no suite trains or times."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "recorded.md").write_text("a recorded figure\n")
    for target in ["bench.speed.best_round_ms", "bench.quality.run_one", "bench.maf.speed", "bench.maf.quality",
                   "bench.glow.speed", "bench.glow.quality", "bench.variational.ProcessPoolExecutor"]:
        monkeypatch.setattr(target, _ran)
    return tmp_path


#: Each suite's command line with a results name ``{}`` and tiny sizes.
SUITES = {
    "speed": ["speed", "--features", "2", "--layers", "1", "--hidden", "4", "--out", "{}"],
    "quality": ["quality", "--data", "8gaussians", "--steps", "1", "--out", "{}"],
    "maf speed": ["maf", "speed", "--repeats", "1", "--name", "{}"],
    "maf quality": ["maf", "quality", "--steps", "1", "--name", "{}"],
    "glow speed": ["glow", "--part", "speed", "--repeats", "1", "--out", "{}"],
    "glow quality": ["glow", "--part", "quality", "--steps-budget", "1", "--out", "{}"],
    "variational": ["variational", "energies", "--steps", "1", "--models", "planar-2", "--targets", "u1", "--name", "{}"],
}


def _argv(suite: str, name: str, *extra: str) -> list[str]:
    return [a.format(name) for a in SUITES[suite]] + list(extra)


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("suite", SUITES)
def test_an_existing_results_file_is_refused_before_any_work(suite, results, capsys) -> None:
    err = _usage_error(_argv(suite, "recorded"), capsys)
    assert "recorded.md exists" in err and "--force" in err
    assert (results / "recorded.md").read_text() == "a recorded figure\n"


@pytest.mark.parametrize("suite", SUITES)
def test_force_overwrites_and_a_new_name_runs(suite, results) -> None:
    with pytest.raises(_Ran):
        main(_argv(suite, "recorded", "--force"))
    with pytest.raises(_Ran):
        main(_argv(suite, "new_name"))


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("name", ["sub/x", "../x", "/tmp/x", "x.md", ".."])
def test_a_results_name_with_a_directory_is_refused(suite, name, results, capsys) -> None:
    assert "bare file name" in _usage_error(_argv(suite, name), capsys)


def test_the_vae_suite_checks_its_options(vae_results, capsys) -> None:
    assert "bare file name" in _usage_error(["variational", "vae", "--name", "a/b", "--steps", "1"], capsys)
    assert "at least 1" in _usage_error(["variational", "vae", "--steps", "0"], capsys)
    for spec in ["planar-x", "nice-2", "planar", "diagonal-2", "iaf-0"]:
        assert f"bad posterior {spec!r}" in _usage_error(["variational", "vae", "--posteriors", f"diagonal,{spec}"], capsys)
    assert "invalid choice" in _usage_error(["variational", "vae", "--data", "cifar10"], capsys)
    assert "--posteriors: expected a comma-separated list" in _usage_error(["variational", "vae", "--posteriors", ","], capsys)


@pytest.mark.parametrize("suite, extra, message", [
    ("speed", ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
    ("speed", ["--calls", "-2"], "--calls: must be at least 1, got -2"),
    ("speed", ["--features", "3"], "even sizes"),
    ("speed", ["--threads", "0"], "--threads: must be at least 1"),
    ("speed", ["--models", "maff"], "unknown 'maff'"),
    ("speed", ["--peers", "zuko,zukoo"], "unknown 'zukoo'"),
    ("quality", ["--steps", "-5"], "--steps: must be at least 1, got -5"),
    ("quality", ["--lr", "-0.001"], "--lr: must be a positive finite number"),
    ("quality", ["--clip", "0"], "--clip: must be a positive finite number"),
    ("quality", ["--warmup", "-1"], "--warmup must be >= 0"),
    ("quality", ["--device", "cpux"], "--device 'cpux'"),
    ("speed", ["--device", "gpu0"], "--device 'gpu0'"),
    ("quality", ["--models", "nice"], "unknown 'nice'"),
    ("quality", ["--peers", "freia"], "unknown 'freia'"),
    ("quality", ["--data", "nope"], "unknown dataset 'nope'"),
    ("quality", ["--data", "digits"], "no exact log_prob"),
    ("maf speed", ["--repeats", "-1"], "--repeats: must be at least 1, got -1"),
    ("maf speed", ["--flow", "nsf", "--decompose"], "does not apply to --flow nsf"),
    ("maf speed", ["--flow", "nsf-coupling", "--decompose"], "does not apply to --flow nsf-coupling"),
    ("maf quality", ["--models", "zuko MAF,nflows MAF"], "unknown 'nflows MAF'"),
    ("maf quality", ["--datasets", "checkerboard,moon"], "unknown dataset 'moon'"),
    ("maf quality", ["--datasets", "digits"], "no exact log_prob"),
    ("glow speed", ["--repeats", "0"], "--repeats: must be at least 1"),
    ("glow quality", ["--clip", "inf"], "--clip: must be a positive finite number"),
    ("glow quality", ["--lr", "0"], "--lr: must be a positive finite number"),
    ("variational", ["--lr", "nan"], "--lr: must be a positive finite number"),
    ("glow quality", ["--eval-draws", "0"], "--eval-draws: must be at least 1"),
    ("glow quality", ["--glow-option", "prior"], "KEY=VALUE"),
    ("variational", ["--steps", "0"], "--steps: must be at least 1"),
    ("variational", ["--models", "planar-x"], "'planar-x'"),
    ("variational", ["--models", "spline-4"], "unknown flow family 'spline'"),
    ("variational", ["--targets", "u9"], "unknown target 'u9'"),
    ("variational", ["--seeds", "0,one"], "--seeds takes comma-separated integers"),
    # a list with no item names nothing (an empty dataset name would be read as the current directory)
    ("maf quality", ["--datasets", ","], "--datasets: expected a comma-separated list, got ','"),
    ("maf quality", ["--models", ""], "--models: expected a comma-separated list, got ''"),
    ("quality", ["--data", ","], "--data: expected a comma-separated list"),
    ("speed", ["--models", ","], "--models: expected a comma-separated list"),
    ("variational", ["--targets", ","], "--targets: expected a comma-separated list"),
    ("variational", ["--seeds", ""], "--seeds: expected a comma-separated list"),
])
def test_bad_options_are_usage_errors(suite, extra, message, results, capsys) -> None:
    assert message in _usage_error(_argv(suite, "new_name", *extra), capsys)


@pytest.mark.parametrize("suite, extra, peer", [
    ("speed", ["--peers", "zuko"], "zuko"),
    ("quality", ["--peers", "nflows"], "nflows"),
    ("maf speed", [], "zuko"),
    ("maf quality", ["--models", "invertible MAF,zuko NSF"], "zuko"),
    ("glow speed", [], "normflows"),
    ("glow quality", [], "zuko"),
    ("variational", ["--models", "normflows-2"], "normflows"),
])
def test_a_missing_peer_names_the_bench_extra(suite, extra, peer, results, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, peer, None)  # import fails as if not installed
    with pytest.raises(SystemExit) as exit_:
        main(_argv(suite, "new_name", *extra))
    assert f"not installed: {peer}" in str(exit_.value.code) and ".[bench]" in str(exit_.value.code)


def test_a_suite_without_its_missing_peer_runs(results, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "normflows", None)
    with pytest.raises(_Ran):
        main(_argv("maf quality", "new_name", "--models", "invertible MAF,zuko MAF"))


def test_variational_help_exits_zero_and_a_bad_part_is_an_error(capsys) -> None:
    assert main(["variational", "--help"]) == 0
    out = capsys.readouterr().out
    assert "energies" in out and "``" not in out and ":func:" not in out
    assert main(["variational", "bogus"]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["speed", "quality", "maf", "glow", "variational energies", "variational vae"])
def test_every_option_of_a_suite_has_help(suite, monkeypatch, capsys) -> None:
    parsers: list[argparse.ArgumentParser] = []
    parse_args = argparse.ArgumentParser.parse_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return parse_args(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording)
    with pytest.raises(SystemExit) as exit_:
        main([*suite.split(), "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and parsers and "usage:" in out
    assert "``" not in out and not re.search(r":\w+:`", out), "reStructuredText markup in --help"
    undocumented = [a.option_strings or a.dest for p in parsers for a in p._actions if not a.help]
    assert not undocumented, f"{suite}: options without help: {undocumented}"


# ----------------------------------------------------------------------------- the written ratios
def _table(text: str) -> list[dict[str, str]]:
    """The rows of the (only) markdown table of ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_maf_speed_ratios_read_peer_time_over_ours(monkeypatch) -> None:
    """Fake timings (ms per round): ours 10, zuko 12 then 18, nflows 30, bare networks 8. The ratios
    are medians of per-round ratios, "fastest peer / this" is peer / ours (above 1: ours is faster)."""
    import bench.maf as maf

    train = {"bare networks": [8.0, 8.0, 8.0], "chained MADEs": [9.0, 9.0, 9.0], "invertible MAF": [10.0, 10.0, 10.0],
             "zuko MAF": [12.0, 18.0, 12.0], "nflows MAF": [30.0, 30.0, 30.0]}
    sample = {"invertible MAF": [20.0] * 5, "zuko MAF": [50.0] * 5, "nflows MAF": [40.0] * 5}
    calls = []

    def fake_rounds(fns, rounds):
        calls.append(rounds)
        return train if "bare networks" in fns else sample

    monkeypatch.setattr(maf, "rounds_ms", fake_rounds)
    text = maf.speed(4)
    rows = {r["model"]: r for r in _table(text)}
    assert calls == [4, 5]
    assert "4 rounds of training steps, 5 of sampling" in text
    assert float(rows["invertible MAF"]["fastest peer / this"]) == pytest.approx(1.2)
    assert float(rows["invertible MAF"]["x bare networks"]) == pytest.approx(1.25)
    assert float(rows["nflows MAF"]["fastest peer / this"]) == pytest.approx(0.4)
    assert float(rows["invertible MAF"]["fastest peer / this (sampling)"]) == pytest.approx(2.0)  # nflows is the fastest
    assert float(rows["zuko MAF"]["train step ms"]) == pytest.approx(12.0)  # median, not mean


def test_nsf_speed_times_the_spline_flows_against_bare_networks_of_their_output_size(monkeypatch) -> None:
    """``--flow nsf``: the NSF rows of the three libraries, no chained-MADE row (a MAF's floor), and bare
    networks with the splines' ``3K - 1`` outputs per feature."""
    import bench.maf as maf

    seen = []

    def fake_rounds(fns, rounds):
        seen.append(sorted(fns))
        return {name: [{"bare networks": 10.0, "invertible NSF": 20.0, "zuko NSF": 30.0}.get(name, 40.0)] * 2
                for name in fns}

    built = []
    real_bare = maf.bare_networks
    monkeypatch.setattr(maf, "bare_networks", lambda *a, **k: built.append(real_bare(*a, **k)) or built[-1])
    monkeypatch.setattr(maf, "rounds_ms", fake_rounds)
    rows = {r["model"]: r for r in _table(maf.speed(2, flow="nsf"))}
    assert seen == [["bare networks", "invertible NSF", "nflows NSF", "zuko NSF"],
                    ["invertible NSF", "nflows NSF", "zuko NSF"]]
    assert float(rows["invertible NSF"]["fastest peer / this"]) == pytest.approx(1.5)
    assert float(rows["invertible NSF"]["x bare networks"]) == pytest.approx(2.0)
    assert built[0][0][-1].out_features == (3 * maf.NSF_BINS - 1) * maf.FEATURES


def test_coupling_nsf_speed_compares_with_nflows_and_half_width_bare_networks(monkeypatch) -> None:
    """``--flow nsf-coupling``: this library's and nflows' spline couplings (zuko has none), ``--compile`` compiles
    both, and the bare networks read half the features and give the splines of the other half."""
    import bench.maf as maf

    seen = []

    def fake_rounds(fns, rounds):
        seen.append(sorted(fns))
        return {name: [15.0 if name.startswith("invertible") else 10.0 if name == "bare networks" else 30.0] * 2
                for name in fns}

    built = []
    real_bare = maf.bare_networks
    monkeypatch.setattr(maf, "bare_networks", lambda *a, **k: built.append(real_bare(*a, **k)) or built[-1])
    monkeypatch.setattr(maf, "rounds_ms", fake_rounds)
    monkeypatch.setattr(maf, "_compiled", lambda model: model)  # the rows, not the compiler
    rows = {r["model"]: r for r in _table(maf.speed(2, compile_=True, flow="nsf-coupling"))}
    compiled = maf.COMPILED
    assert seen[0] == sorted(["bare networks", "invertible NSF (coupling)", "nflows NSF (coupling)",
                              "invertible NSF (coupling)" + compiled, "nflows NSF (coupling)" + compiled])
    assert float(rows["invertible NSF (coupling)"]["fastest peer / this"]) == pytest.approx(2.0)
    assert float(rows["invertible NSF (coupling)" + compiled]["fastest peer / this"]) == pytest.approx(2.0)
    first = built[0][0]
    assert (first[0].in_features, first[-1].out_features) == (maf.FEATURES // 2, (3 * maf.NSF_BINS - 1) * maf.FEATURES // 2)


def test_glow_speed_up_is_normflows_time_over_ours(monkeypatch, tmp_path) -> None:
    import bench.glow as glow

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(glow, "rounds_ms", lambda fns, rounds: {"glow": [10.0, 11.0, 30.0], "normflows": [15.0, 16.5, 40.0]})
    assert glow.main(["--part", "speed", "--levels", "1", "--steps", "1", "--hidden", "4", "--batch", "4",
                      "--out", "g"]) == 0
    rows = {r["model"]: r for r in _table((tmp_path / "g.md").read_text())}
    assert rows["invertible Glow"]["speed-up vs normflows"] == "1.50x"
    assert rows["normflows Glow"]["speed-up vs normflows"] == "1.00x"


def test_speed_suite_ratio_is_peer_time_over_ours(monkeypatch, tmp_path) -> None:
    import bench.speed as speed

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    fake = {"invertible": [4.0, 2.0], "zuko": [3.0, 3.0]}
    monkeypatch.setattr(speed, "rounds_ms", lambda fns, rounds, calls, sync: {k: fake[k] for k in fns})
    monkeypatch.setattr(sys, "argv", ["bench", "speed", "--peers", "zuko"])
    assert speed.main(["--peers", "zuko", "--features", "2", "--layers", "1", "--hidden", "4", "--threads", "1",
                       "--out", "s"]) == 0
    text = (tmp_path / "s.md").read_text()
    rows = {r["library"]: r for r in _table(text)}
    assert float(rows["zuko"]["step time / invertible"]) == pytest.approx(1.5)  # best rounds: 3 / 2
    assert "- command: `python -m bench speed --peers zuko`" in text
    assert "torch threads 1" in text and "zuko " in text.split("- versions:")[1].splitlines()[0]


def test_maf_help_says_sampling_runs_fewer_rounds(capsys) -> None:
    """``--repeats`` is the training-step rounds; sampling runs ``max(repeats // 2, 5)`` (see the table test)."""
    with pytest.raises(SystemExit):
        main(["maf", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "sampling runs half as many, at least 5" in help_text
    assert "from: invertible MAF, invertible MAF (identity start), zuko MAF" in help_text


# ----------------------------------------------------------------------------- the VAE suite's appended rows
@pytest.fixture
def vae_results(tmp_path, monkeypatch):
    """A scratch results folder and a fake ``train_and_evaluate`` (no training)."""
    import bench._variational_vae as vae

    def fake(args):
        return {"layers": args.layers, "test_iw_log_px": -100.0 - args.layers, "test_elbo": -110.0, "train_elbo": -105.0,
                "iw_samples": args.iw_samples, "test_images": 1000, "steps": args.steps, "parameters": 7,
                "wall_time_s": 1.0}

    monkeypatch.setattr(vae, "train_and_evaluate", fake)
    monkeypatch.setattr(vae, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return tmp_path


def test_vae_rows_are_appended_only_with_append_and_every_command_is_recorded(vae_results, monkeypatch, capsys) -> None:
    first = ["variational", "vae", "--steps", "3", "--posteriors", "diagonal", "--name", "v", "--out", str(vae_results / "a")]
    monkeypatch.setattr(sys, "argv", ["bench", *first])
    assert main(first) == 0
    recorded = (vae_results / "v.jsonl").read_text()

    second = ["variational", "vae", "--steps", "4", "--batch-size", "50", "--seed", "1", "--posteriors", "planar-2",
              "--name", "v", "--out", str(vae_results / "b")]
    assert "v.jsonl exists" in _usage_error(second, capsys)  # without --append: refused, nothing added
    assert (vae_results / "v.jsonl").read_text() == recorded

    monkeypatch.setattr(sys, "argv", ["bench", *second, "--append"])
    assert main([*second, "--append"]) == 0
    text = (vae_results / "v.md").read_text()
    assert f"`python -m bench {' '.join(first)}`" in text and f"`python -m bench {' '.join(second)} --append`" in text
    assert "batch 50" in text and "seed 1 " in text
    rows = _table(text)
    assert [(r["posterior"], r["steps"], r["batch"], r["seed"]) for r in rows] == [("diagonal", "3", "100", "0"),
                                                                                  ("planar K=2", "4", "50", "1")]


def test_a_failed_glow_training_run_stops_the_others(monkeypatch) -> None:
    """``glow --part quality`` trains in child processes: when one fails, the ones still running are killed
    and the suite exits with a message naming the model, not a traceback that leaves them running."""
    import argparse

    import bench.glow as glow

    procs = []

    class FakeProc:
        def __init__(self, cmd):
            self.args, self.killed = cmd, False
            self.returncode = 1 if "glow" == cmd[cmd.index("--model") + 1] else None
            procs.append(self)

        def wait(self):
            return self.returncode if self.returncode is not None else -9 if self.killed else 0

        def kill(self):
            self.killed = True

    monkeypatch.setattr(glow.subprocess, "Popen", FakeProc)
    with pytest.raises(SystemExit) as exit_:
        glow.quality(argparse.Namespace(jobs=len(glow.MODELS)), ["--steps-budget", "1"])
    assert "training run of 'glow' failed" in str(exit_.value.code)
    assert [p.killed for p in procs] == [False] + [True] * (len(glow.MODELS) - 1)
