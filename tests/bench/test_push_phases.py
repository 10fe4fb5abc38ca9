"""The api bench's extra-p99 statistics (issue 18): quotes filed by the analytics phase they arrived in, and
the difference of the two sides' p99 with its bootstrap interval."""

from __future__ import annotations

import numpy as np

from .test_report import _load

api = _load("api")


def test_latencies_are_filed_by_phase_once_the_switch_was_acknowledged() -> None:
    # (switched at, acknowledged at, analytics on): the last phase is still running when the run ends
    phases = [(0.0, 0.0, False), (4.0, 4.8, True), (8.0, 8.2, False), (12.0, 12.1, True)]
    samples = [
        (1.0, 10.0),  # phase 0, settled
        (4.5, 99.0),  # phase 1, before every client's switch was acknowledged: neither side's
        (5.0, 98.0),  # phase 1, acknowledged but not settled
        (5.4, 11.0),  # phase 1, settled
        (7.9, 12.0),  # phase 1
        (8.9, 13.0),  # phase 2
        (13.0, 97.0),  # phase 3: cut short by the end of the run
    ]
    filed = api._by_phase(samples, phases)
    assert [(p["analytics"], p["latencies"]) for p in filed] == [
        (False, [10.0]),
        (True, [11.0, 12.0]),
        (False, [13.0]),
    ]


def test_the_extra_p99_finds_a_shift_of_the_tail_and_brackets_it() -> None:
    rng = np.random.default_rng(7)
    phases = [
        {"analytics": on, "latencies": (rng.gamma(4.0, 3.0, 20_000) + (1.5 if on else 0.0)).tolist()}
        for on in [False, True] * 12
    ]
    result = api.extra_p99(phases, resamples=300)
    assert result["pairs"] == 12
    assert abs(result["extra"] - 1.5) < 0.3
    low, high = result["interval90"]
    assert low < 1.5 < high
    assert high - low < 1.0
    one = api.extra_p99(phases[:2], resamples=50)
    assert one["quotes_with"] == 20_000
    assert one["quotes_without"] == 20_000


def test_no_difference_reads_as_none() -> None:
    rng = np.random.default_rng(8)
    phases = [
        {"analytics": on, "latencies": rng.gamma(4.0, 3.0, 20_000).tolist()} for on in [False, True] * 12
    ]
    result = api.extra_p99(phases, resamples=300)
    low, high = result["interval90"]
    assert low < 0.0 < high
    assert abs(result["extra"]) < 0.5
