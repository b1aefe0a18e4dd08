"""The benchmarks' timing rounds (``bench.common.rounds_ms``): warm-up, one timing per function per round, random order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import bench.common as common
from bench.maf import paired_ratio
from bench.speed import best_round_ms


def _recorders(names: str, log: list[str]) -> dict:
    return {n: (lambda n=n: log.append(n)) for n in names}


def test_each_round_runs_every_function_once_in_a_fresh_seeded_order() -> None:
    names, rounds, warmup = "abcde", 12, 2
    log: list[str] = []
    times = common.rounds_ms(_recorders(names, log), rounds, warmup=warmup)
    assert log[: warmup * len(names)] == [n for n in names for _ in range(warmup)]
    orders = ["".join(log[warmup * len(names):][r * len(names):(r + 1) * len(names)]) for r in range(rounds)]
    assert len(log) == (warmup + rounds) * len(names)
    assert all(sorted(o) == sorted(names) for o in orders)  # each function exactly once per round
    assert len(set(orders)) > rounds // 2  # the order changes from round to round
    assert {o[0] for o in orders} != {names[0]}  # the first function is not always timed first
    assert list(times) == list(names) and all(len(v) == rounds for v in times.values())

    again: list[str] = []
    common.rounds_ms(_recorders(names, again), rounds, warmup=warmup)
    assert again == log  # seeded: a rerun times in the same orders
    other: list[str] = []
    common.rounds_ms(_recorders(names, other), rounds, warmup=warmup, seed=1)
    assert other != log


def test_round_times_are_per_call_means_paired_by_round(monkeypatch) -> None:
    """Round ``r``: the ``k``-th call of a takes k ms and of b 2k ms; the lists pair the two by round."""
    clock = [0.0]
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    counts = {"a": 0, "b": 0}
    syncs = []

    def make(name: str, scale: float):
        def fn() -> None:
            counts[name] += 1
            clock[0] += scale * counts[name] / 1e3

        return fn

    times = common.rounds_ms({"a": make("a", 1.0), "b": make("b", 2.0)}, rounds=4, calls=2, warmup=1,
                             sync=lambda: syncs.append(1))
    # warm-up is call 1; round r makes calls 2r+2 and 2r+3, mean 2r+2.5
    assert times["a"] == pytest.approx([2 * r + 2.5 for r in range(4)])
    assert times["b"] == pytest.approx([2 * (2 * r + 2.5) for r in range(4)])
    assert paired_ratio(times, "b", "a") == pytest.approx(2.0)
    assert len(syncs) == 2 * 2 * 4  # before and after every timing


def test_speed_suite_reports_the_best_round(monkeypatch) -> None:
    monkeypatch.setattr("bench.speed.rounds_ms", lambda fns, rounds, calls, sync: {"a": [3.0, 1.0, 2.0]})
    assert best_round_ms({"a": lambda: None}, 3, 1, "cpu") == {"a": 1.0}


@pytest.mark.parametrize("rounds, calls, warmup", [(0, 1, 0), (1, 0, 0), (1, 1, -1)])
def test_bad_round_counts_are_an_error(rounds: int, calls: int, warmup: int) -> None:
    with pytest.raises(ValueError, match="rounds and calls"):
        common.rounds_ms({"a": lambda: None}, rounds, calls, warmup)
