"""zoo.stats against numbers worked out by hand (t quantiles from a printed t table)."""

from __future__ import annotations

import math

import pytest

from zoo.stats import judge, mean_std, paired_by_seed, paired_difference, paired_ratio_by_seed, t_interval

# Student t quantiles, two-sided 95%: t_{0.975, 1} and t_{0.975, 3}; 90%: t_{0.95, 3}
T975_1, T975_3, T95_3 = 12.706205, 3.182446, 2.353363


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof 1: sqrt((1 + 0 + 1) / 2)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert mean_std([1.0, math.inf]) == (math.inf, math.inf)
    with pytest.raises(ValueError):
        mean_std([])


def test_paired_difference_four_pairs():
    # d = [1, 2, 2, 3]: mean 2, sd = sqrt((1 + 0 + 0 + 1) / 3) = 0.816497,
    # half width = t_{0.975,3} sd / sqrt(4) = 3.182446 * 0.816497 / 2 = 1.299222
    d = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(2.0)
    assert d["sd"] == pytest.approx(0.816497, rel=1e-5)
    assert d["lo"] == pytest.approx(2.0 - 1.299222, rel=1e-5)
    assert d["hi"] == pytest.approx(2.0 + 1.299222, rel=1e-5)


def test_paired_difference_two_pairs_uses_t_not_normal():
    # d = [1, 3]: mean 2, sd sqrt(2), half width = 12.706205 * sqrt(2) / sqrt(2) = 12.706205
    # (a normal quantile would give 1.96 * 1 = 1.96; ddof 0 would give 12.706 / sqrt(2))
    d = paired_difference([2.0, 5.0], [1.0, 2.0])
    assert (d["mean"], d["n"]) == (pytest.approx(2.0), 2)
    assert d["sd"] == pytest.approx(math.sqrt(2.0))
    assert d["lo"] == pytest.approx(2.0 - T975_1, rel=1e-6)
    assert d["hi"] == pytest.approx(2.0 + T975_1, rel=1e-6)


def test_paired_difference_is_paired_not_two_sample():
    # a large common seed effect cancels: d = [0.1, 0.1, 0.1, 0.1] has sd 0 and a point interval
    d = paired_difference([10.1, 20.1, 30.1, 40.1], [10.0, 20.0, 30.0, 40.0])
    assert d["mean"] == pytest.approx(0.1)
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)


def test_paired_difference_one_pair_and_bad_input():
    d = paired_difference([3.0], [1.0])
    assert d["mean"] == 2.0 and d["n"] == 1
    assert math.isnan(d["sd"]) and math.isnan(d["lo"]) and math.isnan(d["hi"])
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_difference([], [])
    with pytest.raises(ValueError):
        paired_difference([math.nan], [1.0])


def test_t_interval_level():
    # 90%: 0 -+ t_{0.95,3} * 2 / sqrt(4) = -+ 2.353363
    lo, hi = t_interval(0.0, 2.0, 4, level=0.90)
    assert lo == pytest.approx(-T95_3, rel=1e-6) and hi == pytest.approx(T95_3, rel=1e-6)
    lo, hi = t_interval(1.0, 2.0, 4)
    assert hi - 1.0 == pytest.approx(T975_3, rel=1e-6)
    assert all(math.isnan(x) for x in t_interval(1.0, 0.5, 1))


def test_paired_by_seed_uses_shared_seeds_only():
    d = paired_by_seed({0: 1.0, 1: 2.0, 2: 5.0}, {1: 0.0, 2: 1.0, 3: 9.0})
    assert d["seeds"] == [1, 2] and d["n"] == 2 and d["mean"] == pytest.approx(3.0)  # d = 2, 4
    assert paired_by_seed({0: 1.0}, {1: 1.0}) is None


def test_judge_needs_both_the_seed_spread_and_the_floor():
    d = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])  # 2, 95% [0.70, 3.30]
    assert judge(d, floor_std=0.5) == {"called": True, "beyond_floor": True,
                                       "beyond_seeds": True}
    # within the floor (|2| < 2 * 1.5): not called, although the interval excludes 0
    assert judge(d, floor_std=1.5) == {"called": False, "beyond_floor": False,
                                       "beyond_seeds": True}
    assert judge(d, floor_std=1.0)["called"] is False  # |d| = 2 floor std exactly: not beyond
    wide = paired_difference([2.0, 5.0], [1.0, 2.0])  # 2, 95% [-10.7, 14.7]
    assert judge(wide, floor_std=0.01) == {"called": False, "beyond_floor": True,
                                           "beyond_seeds": False}
    assert judge(wide, floor_std=0.01, k=500.0)["beyond_floor"] is False


def test_judge_with_one_seed_goes_by_the_floor_alone():
    one = paired_difference([0.5], [0.0])
    assert judge(one, floor_std=0.2) == {"called": True, "beyond_floor": True,
                                         "beyond_seeds": None}
    assert judge(one, floor_std=0.3)["called"] is False


def test_paired_ratio_is_the_paired_difference_of_logs():
    # a / b = 2 and 4 on seeds 0, 1 (seed 2 only in a): d = ln 2, ln 4: mean 1.5 ln 2,
    # sd = ln 2 / sqrt 2, half width = t_{0.975,1} sd / sqrt 2 = 12.706205 ln 2 / 2
    r = paired_ratio_by_seed({0: 2.0, 1: 8.0, 2: 5.0}, {0: 1.0, 1: 2.0})
    ln2 = math.log(2.0)
    assert r["seeds"] == [0, 1] and r["n"] == 2
    assert r["mean"] == pytest.approx(1.5 * ln2)
    assert r["sd"] == pytest.approx(ln2 / math.sqrt(2.0))
    assert r["hi"] - r["mean"] == pytest.approx(T975_1 * ln2 / 2, rel=1e-6)
    assert math.exp(r["mean"]) == pytest.approx(math.sqrt(8.0))  # the geometric mean ratio
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError):
            paired_ratio_by_seed({0: bad}, {0: 1.0})


def test_judge_by_the_ratio_spread_calls_a_difference_raw_differences_cannot_bound():
    # every seed of the field thousands of times free's FD, by varying factors: the raw
    # differences spread so far that their interval spans 0; the log ratios (9.1, 6.4, 8.7)
    # do not
    field, free = [64086.0, 6087.0, 33155.0], [6.69, 9.19, 5.46]
    d = paired_difference(field, free)
    assert d["lo"] < 0 < d["hi"]
    assert judge(d, floor_std=1.45)["called"] is False
    r = paired_ratio_by_seed(dict(enumerate(field)), dict(enumerate(free)))
    assert r["lo"] > 0
    assert judge(d, floor_std=1.45, spread=r) == {"called": True, "beyond_floor": True,
                                                   "beyond_seeds": True}
    # the floor test stays on the metric's scale: a 3x ratio of tiny values is not called
    tiny = paired_difference([0.3, 0.31, 0.29], [0.1, 0.1, 0.1])
    rt = paired_ratio_by_seed({0: 0.3, 1: 0.31, 2: 0.29}, {0: 0.1, 1: 0.1, 2: 0.1})
    assert judge(tiny, floor_std=1.45, spread=rt)["called"] is False
    with pytest.raises(ValueError):
        judge(d, floor_std=1.45, spread=paired_ratio_by_seed({0: 2.0, 1: 3.0}, {0: 1.0, 1: 1.0}))
