"""Open-loop arrival schedules: Poisson by default, gamma with burstiness, repeatable by seed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from garrison.bench.load import arrival_offsets


def gaps(rate: float, burstiness: float, seed: int = 0, n: int = 20000) -> np.ndarray:
    return np.diff(list(itertools.islice(arrival_offsets(rate, burstiness, seed), n)))


def test_first_request_goes_at_once_and_times_increase() -> None:
    offsets = list(itertools.islice(arrival_offsets(2.0, 1.0, seed=0), 50))
    assert offsets[0] == 0.0
    assert all(b >= a for a, b in zip(offsets, offsets[1:], strict=False))


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (4.0, 0.5), (0.25, 2.0)])
def test_gaps_have_the_rate_mean_and_gamma_spread(burstiness: float, cv: float) -> None:
    g = gaps(rate=4.0, burstiness=burstiness)
    assert g.mean() == pytest.approx(0.25, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.08)


def test_seed_repeats_and_changes_the_schedule() -> None:
    assert np.array_equal(gaps(1.0, 1.0, seed=3, n=20), gaps(1.0, 1.0, seed=3, n=20))
    assert not np.array_equal(gaps(1.0, 1.0, seed=3, n=20), gaps(1.0, 1.0, seed=4, n=20))


def test_infinite_rate_sends_everything_at_once() -> None:
    assert list(itertools.islice(arrival_offsets(float("inf"), 1.0, seed=0), 5)) == [0.0] * 5
