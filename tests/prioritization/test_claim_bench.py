"""The claim benchmark's arithmetic: latency percentiles from the wrk script's histogram and
rounds of one scenario pooled into one figure (the benchmark itself needs wrk and minutes)."""

import math

import pytest

from prioritization.claim_bench import BUCKETS_PER_E, WrkResult, _percentile_ms, _pooled


def _bucket(ms: float) -> str:
    return str(math.floor(math.log(ms * 1000) * BUCKETS_PER_E))


def _run(histogram: dict[str, int], *, units: int, seconds: float) -> WrkResult:
    return WrkResult(
        clients=8,
        campaigns=5,
        seconds=seconds,
        units=units,
        claims=units,
        empty=1,
        errors=0,
        next_p50_ms=_percentile_ms(histogram, 0.5),
        next_p99_ms=_percentile_ms(histogram, 0.99),
        all_p50_ms=1.0,
        all_p99_ms=9.0,
        first10_s=0.0,
        last10_s=0.0,
        finished_threads=0,
        histogram=histogram,
    )


def test_a_percentile_is_read_from_the_bucket_it_falls_in_to_within_its_width() -> None:
    histogram = {_bucket(10.0): 98, _bucket(40.0): 2}
    assert _percentile_ms(histogram, 0.5) == pytest.approx(10.0, rel=0.02)
    assert _percentile_ms(histogram, 0.98) == pytest.approx(10.0, rel=0.02)
    assert _percentile_ms(histogram, 0.99) == pytest.approx(40.0, rel=0.02)
    assert _percentile_ms({}, 0.99) is None


def test_pooled_rounds_sum_their_counts_and_merge_their_latencies() -> None:
    fast = _run({_bucket(10.0): 100}, units=400, seconds=5.0)
    slow = _run({_bucket(10.0): 97, _bucket(50.0): 3}, units=200, seconds=5.0)

    pooled = _pooled([fast, slow])

    assert (pooled.units, pooled.seconds, pooled.empty) == (600, 10.0, 2)
    assert pooled.units_s == 60.0
    assert sum(pooled.histogram.values()) == 200
    # 3 slow answers of 200 are 1.5%: the pooled p99 is theirs, the median the fast one's.
    assert pooled.next_p99_ms == pytest.approx(50.0, rel=0.02)
    assert pooled.next_p50_ms == pytest.approx(10.0, rel=0.02)
    assert (pooled.all_p50_ms, pooled.all_p99_ms) == (1.0, 9.0)
