"""Tests for the two-way bootstrap interval and the paired approximate randomization test.

Expected values come from distributions that can be written down by hand: with two items
[0, 1], a bootstrap resample of the items has mean 0, 0.5 or 1 with probabilities 1/4, 1/2
and 1/4. Exact p-values come from enumerating every sign pattern with itertools.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from excitor_bench import stats
from excitor_bench.stats import Interval, bootstrap_interval, paired_difference, two_way_bootstrap_means


def exact_sign_flip_p_value(differences: list[Fraction]) -> Fraction:
    """Return the share of all 2^n sign patterns whose |sum| is at least the observed |sum|."""
    observed = abs(sum(differences))
    patterns = list(itertools.product((1, -1), repeat=len(differences)))
    extreme = sum(1 for signs in patterns if abs(sum(s * d for s, d in zip(signs, differences))) >= observed)
    return Fraction(extreme, len(patterns))


def coverage(draw_scores, true_mean: float, data_sets: int, resamples: int = 1000) -> float:
    """Return the share of simulated data sets whose 95 % interval contains `true_mean`."""
    hits = 0
    for index in range(data_sets):
        interval = bootstrap_interval(draw_scores(), resamples=resamples, seed=index)
        hits += interval.low <= true_mean <= interval.high
    return hits / data_sets


# ----------------------------------------------------------------------------- bootstrap_interval


def test_constant_scores_give_zero_width():
    interval = bootstrap_interval(np.full((3, 50), 0.7))

    assert isinstance(interval, Interval)
    assert interval.mean == pytest.approx(0.7, abs=1e-12)
    assert interval.low == pytest.approx(0.7, abs=1e-12)
    assert interval.high == pytest.approx(0.7, abs=1e-12)
    assert interval.confidence == 0.95


def test_one_seed_resamples_items():
    # Item resamples of [0, 1] have mean 0 (p = 1/4), 0.5 (p = 1/2) or 1 (p = 1/4). The 2.5 %
    # and 97.5 % quantiles are therefore 0 and 1, and the 30 % and 70 % quantiles are both 0.5.
    wide = bootstrap_interval(np.array([[0.0, 1.0]]))
    narrow = bootstrap_interval(np.array([[0.0, 1.0]]), confidence=0.4)

    assert (wide.mean, wide.low, wide.high) == (0.5, 0.0, 1.0)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_interval_bounds_are_central_quantiles():
    # Item resamples of [0, 0, 1] have mean k/3, k ~ Binomial(3, 1/3): P(k = 3) = 1/27 = 3.7 %.
    # The 97.5 % quantile is therefore 1, and the 95 % quantile (a 90 % interval) is 2/3.
    scores = np.array([[0.0, 0.0, 1.0]])

    interval = bootstrap_interval(scores)
    ninety = bootstrap_interval(scores, confidence=0.9)

    assert interval.mean == pytest.approx(1 / 3)
    assert (interval.low, interval.high) == (0.0, 1.0)
    assert ninety.high == pytest.approx(2 / 3)


def test_one_item_resamples_seeds():
    interval = bootstrap_interval(np.array([[0.0], [1.0]]))
    narrow = bootstrap_interval(np.array([[0.0], [1.0]]), confidence=0.4)

    assert (interval.mean, interval.low, interval.high) == (0.5, 0.0, 1.0)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_seed_effect_widens_interval():
    # Seed 0 fails every item and seed 1 passes every item: only resampling seeds moves the mean.
    interval = bootstrap_interval(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))

    assert interval.mean == 0.5
    assert interval.low == 0.0
    assert interval.high == 1.0


def test_item_effect_widens_interval():
    # Both seeds agree on every item: only resampling items moves the mean.
    interval = bootstrap_interval(np.array([[0.0, 1.0], [0.0, 1.0]]))

    assert interval.low == 0.0
    assert interval.high == 1.0


def test_replicates_share_item_columns():
    # scores = [[0, 1], [1, 0]]. The replicate mean is 0 only when one seed row is drawn twice
    # and the item column that is 0 in that row is drawn twice: 2 * 1/4 * 1/4 = 1/8. The same
    # for 1. Drawing item columns separately for each seed row would give 1/16 instead.
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    replicates = two_way_bootstrap_means([scores], 20000, np.random.default_rng(0))[:, 0]

    assert set(np.unique(replicates)) <= {0.0, 0.5, 1.0}
    assert np.mean(replicates == 0.0) == pytest.approx(1 / 8, abs=0.01)
    assert np.mean(replicates == 1.0) == pytest.approx(1 / 8, abs=0.01)
    assert np.mean(replicates == 0.5) == pytest.approx(3 / 4, abs=0.01)


def test_small_blocks_give_same_distribution(monkeypatch):
    # Four elements per block means two replicates per block for two items, so the loop over
    # blocks runs many times and ends with a partial block.
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 4)
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    replicates = two_way_bootstrap_means([scores], 4001, np.random.default_rng(0))[:, 0]

    assert replicates.shape == (4001,)
    assert set(np.unique(replicates)) <= {0.0, 0.5, 1.0}
    assert np.mean(replicates == 0.0) == pytest.approx(1 / 8, abs=0.02)


def test_one_dimensional_scores_are_one_seed():
    scores = np.random.default_rng(3).random(30)

    assert bootstrap_interval(scores, seed=4) == bootstrap_interval(scores[None, :], seed=4)


def test_interval_is_deterministic():
    scores = np.random.default_rng(1).random((3, 40))

    first = bootstrap_interval(scores, seed=5)
    again = bootstrap_interval(scores.copy(), seed=5)
    other_seed = bootstrap_interval(scores, seed=6)

    assert first == again
    assert first.mean == other_seed.mean
    assert (first.low, first.high) != (other_seed.low, other_seed.high)


def test_interval_on_large_benchmark():
    # MMLU size: 14,042 questions, 3 seeds. Blocks keep the count matrices small.
    scores = (np.random.default_rng(2).random((3, 14042)) < 0.4).astype(np.float64)
    interval = bootstrap_interval(scores, resamples=500)

    assert interval.mean == pytest.approx(scores.mean(), abs=1e-12)
    assert interval.low < interval.mean < interval.high
    # Standard error of a Bernoulli(0.4) mean over 14,042 items is about 0.0041, so a 95 %
    # interval is about 0.016 wide. Resampling the three seeds as well only widens it.
    assert 0.012 < interval.high - interval.low < 0.04


def test_coverage_one_seed_bernoulli():
    rng = np.random.default_rng(10)

    share = coverage(lambda: (rng.random((1, 200)) < 0.3).astype(np.float64), 0.3, data_sets=400)

    assert 0.90 <= share <= 0.99


def test_coverage_seeds_with_item_difficulty():
    # Each item has its own success probability, drawn from Beta(0.15, 0.35) (mean 0.3), and
    # three seeds attempt it independently. Item difficulty dominates, as it does in benchmarks.
    rng = np.random.default_rng(11)

    def draw_scores() -> np.ndarray:
        item_probability = rng.beta(0.15, 0.35, size=200)
        return (rng.random((3, 200)) < item_probability).astype(np.float64)

    assert 0.90 <= coverage(draw_scores, 0.3, data_sets=400) <= 0.99


def test_coverage_pure_noise_is_conservative():
    # Independent Bernoulli(0.3) scores: the two-way bootstrap overestimates the variance,
    # so it covers more often than 95 %, never less.
    rng = np.random.default_rng(12)

    share = coverage(lambda: (rng.random((3, 200)) < 0.3).astype(np.float64), 0.3, data_sets=200)

    assert share >= 0.97


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.array([[0.0, 1.0, 1.0], [1.0, 0.0, np.nan]]), r"scores\[1, 2\].*NaN or infinite"),
        (np.array([[0.0, np.inf]]), r"scores\[0, 1\]"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros((2, 0)), "empty"),
        (np.zeros((2, 3, 4)), "shape"),
        (np.float64(0.5), "shape"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_interval_rejects_invalid_scores(scores, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(scores)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("confidence", 0.0),
        ("confidence", 1.0),
        ("confidence", 95),
        ("confidence", float("nan")),
        ("confidence", True),
        ("resamples", 0),
        ("resamples", 2.5),
        ("seed", -1),
        ("seed", 1.5),
    ],
)
def test_interval_rejects_invalid_settings(keyword, value):
    with pytest.raises(ValueError, match=keyword):
        bootstrap_interval(np.ones((2, 3)), **{keyword: value})


# ----------------------------------------------------------------------------- paired_difference


def test_all_correct_against_all_wrong():
    # d_j = 1 for 40 items. Only the all-plus and all-minus sign patterns reach |sum| = 40, so
    # one permutation hits with probability 2^-39, and 10,000 permutations almost surely
    # (probability above 1 - 2e-8) count none: p = 1 / (10,000 + 1).
    result = paired_difference(np.ones((3, 40)), np.zeros((1, 40)))

    assert result["difference"] == 1.0
    assert result["low"] == 1.0
    assert result["high"] == 1.0
    assert result["p_value"] == 1 / 10001
    # Every bootstrap replicate of the difference is 1, so none lies at or below 0: p = 2 / 2001.
    assert result["p_value_bootstrap"] == 2 / 2001
    assert (result["n_items"], result["n_seeds_a"], result["n_seeds_b"]) == (40, 3, 1)
    assert result["permutations"] == 10000
    assert result["test"] == stats.PERMUTATION_TEST


def test_identical_methods_give_p_one():
    scores = np.random.default_rng(4).random((2, 25))

    result = paired_difference(scores, scores.copy())

    assert result["difference"] == 0.0
    # Every flipped sum is 0, as extreme as the observed 0, so count = permutations.
    assert result["p_value"] == 1.0
    # The seeds of a and b are resampled separately, so the interval has width but contains 0.
    assert result["low"] < 0.0 < result["high"]
    assert result["p_value_bootstrap"] > 0.5


def test_identical_single_runs_give_zero_interval():
    scores = np.random.default_rng(4).random((1, 25))

    result = paired_difference(scores, scores.copy())

    assert (result["difference"], result["low"], result["high"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    # Every replicate difference is 0, which counts on both sides.
    assert result["p_value_bootstrap"] == 1.0


def test_p_value_matches_exact_enumeration():
    # One seed each, six items: 2^6 = 64 sign patterns. d contains 0.1 twice and -0.05 twice,
    # so exact ties occur between flipped sums that floats compute with rounding error.
    a = ["0.9", "0.7", "0.8", "0.4", "0.6", "0.75"]
    b = ["0.5", "0.6", "0.85", "0.3", "0.65", "0.5"]
    exact = exact_sign_flip_p_value([Fraction(x) - Fraction(y) for x, y in zip(a, b)])

    result = paired_difference(np.array([a], dtype=float), np.array([b], dtype=float), permutations=40000)

    assert 0.05 < exact < 0.95
    # Monte Carlo standard error: sqrt(p (1 - p) / 40,000) <= 0.0025.
    assert result["p_value"] == pytest.approx(float(exact), abs=0.01)


def test_p_value_uses_seed_averages():
    # a has two seeds. d_j is the mean of a's two scores minus b's score: [1, 0.5, -0.5, 1, 0.5].
    a = np.array([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.5, 0.0, 0.0]])
    differences = [Fraction(1), Fraction(1, 2), Fraction(-1, 2), Fraction(1), Fraction(1, 2)]
    exact = exact_sign_flip_p_value(differences)

    result = paired_difference(a, b, permutations=40000)

    assert exact == Fraction(8, 32)
    assert result["difference"] == pytest.approx(0.5)
    assert result["p_value"] == pytest.approx(float(exact), abs=0.01)


def test_difference_interval_by_hand():
    # b is constant, so the difference replicates are the item resamples of a = [1, 0]:
    # 0, 0.5 or 1 with probabilities 1/4, 1/2 and 1/4.
    a = np.array([[1.0, 0.0]])
    b = np.array([[0.0, 0.0]])

    wide = paired_difference(a, b)
    narrow = paired_difference(a, b, confidence=0.4)

    assert (wide["difference"], wide["low"], wide["high"]) == (0.5, 0.0, 1.0)
    assert (narrow["low"], narrow["high"]) == (0.5, 0.5)
    assert narrow["confidence"] == 0.4


def test_difference_resamples_items_jointly():
    # a beats b by exactly 0.25 on every item, so every shared resample of the items gives a
    # difference of 0.25. Resampling items separately for a and b would give a wide interval.
    b = np.array([[0.0, 0.5, 0.25, 0.75, 0.5, 0.0]])
    a = b + 0.25

    result = paired_difference(a, b)

    assert result["difference"] == pytest.approx(0.25, abs=1e-12)
    assert result["low"] == pytest.approx(0.25, abs=1e-12)
    assert result["high"] == pytest.approx(0.25, abs=1e-12)


def test_paired_difference_is_deterministic():
    rng = np.random.default_rng(5)
    a = rng.random((3, 60))
    b = rng.random((1, 60))

    first = paired_difference(a, b, permutations=2000, seed=9)
    again = paired_difference(a.copy(), b.copy(), permutations=2000, seed=9)
    other_seed = paired_difference(a, b, permutations=2000, seed=10)

    assert first == again
    assert first["difference"] == other_seed["difference"]
    assert (first["low"], first["high"], first["p_value"]) != (
        other_seed["low"], other_seed["high"], other_seed["p_value"]
    )


def test_p_value_independent_of_resamples():
    rng = np.random.default_rng(6)
    a = rng.random((2, 30))
    b = rng.random((2, 30))

    few = paired_difference(a, b, resamples=100, permutations=1000)
    many = paired_difference(a, b, resamples=300, permutations=1000)

    assert few["p_value"] == many["p_value"]


def test_false_positive_rate_near_level():
    # Under the null hypothesis a and b come from the same distribution, so p < 0.05 should
    # happen in about 5 % of the data sets (binomial standard error over 400 sets: 1.1 %).
    rng = np.random.default_rng(7)
    rejections = 0
    for index in range(400):
        item_probability = rng.random(80)
        a = (rng.random((2, 80)) < item_probability).astype(np.float64)
        b = (rng.random((2, 80)) < item_probability).astype(np.float64)
        rejections += paired_difference(a, b, resamples=10, permutations=500, seed=index)["p_value"] < 0.05

    assert 0.02 <= rejections / 400 <= 0.09


def test_interval_bound_of_exact_zero_is_positive_zero():
    # Two of three seeds score 0 on every item, so the lowest replicates are exactly 0. Summed
    # in floating point after centring, they come out near -1e-18 unless rounded.
    scores = np.zeros((3, 7))
    scores[0] = [0.1, 0.7, 0.3, 0.9, 0.2, 0.6, 0.4]

    result = bootstrap_interval(scores)

    assert result.low == 0.0
    assert math.copysign(1.0, result.low) == 1.0


def test_bootstrap_p_value_counts_seed_variation():
    # Seed 0 of a scores 1 on every item, seeds 1 and 2 score 0, and so does every seed of b. Every item's
    # seed-averaged difference is 1/3, so the sign-flip test gives p = 1 / 10001.
    # A bootstrap replicate draws none of seed 0 with probability (2/3)^3 = 8/27, and then the
    # difference is 0, so the bootstrap p-value is about 2 * 8/27 = 16/27.
    a = np.zeros((3, 50))
    a[0] = 1.0
    b = np.zeros((3, 50))

    result = paired_difference(a, b)

    assert result["p_value"] == 1 / 10001
    # The Monte Carlo standard error of 2 * share over 2000 replicates is about 0.02.
    assert result["p_value_bootstrap"] == pytest.approx(16 / 27, abs=0.07)
    assert result["low"] == 0.0


@pytest.mark.parametrize("effect", [0.0, 0.05, 0.3])
def test_bootstrap_p_value_agrees_with_interval(effect):
    rng = np.random.default_rng(11)
    item_probability = rng.random(200)
    a = (rng.random((3, 200)) < np.clip(item_probability + effect, 0, 1)).astype(np.float64)
    b = (rng.random((3, 200)) < item_probability).astype(np.float64)

    result = paired_difference(a, b)

    zero_outside = result["low"] > 0.0 or result["high"] < 0.0
    assert (result["p_value_bootstrap"] < 0.05) == zero_outside


def test_clear_improvement_is_significant():
    rng = np.random.default_rng(8)
    a = (rng.random((3, 300)) < 0.7).astype(np.float64)
    b = (rng.random((1, 300)) < 0.4).astype(np.float64)

    result = paired_difference(a, b, permutations=2000)

    assert result["p_value"] < 0.01
    assert result["low"] > 0.0


def test_paired_rejects_mismatched_items():
    with pytest.raises(ValueError, match="a has 5 items but b has 4"):
        paired_difference(np.ones((2, 5)), np.ones((1, 4)))


def test_paired_rejects_invalid_inputs():
    with pytest.raises(ValueError, match=r"b\[0, 1\]"):
        paired_difference(np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="permutations"):
        paired_difference(np.ones((2, 3)), np.ones((1, 3)), permutations=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.ones((2, 3)), np.ones((1, 3)), confidence=1.5)


def test_replicates_reject_mismatched_groups():
    with pytest.raises(ValueError, match=r"item counts \[3, 2\]"):
        two_way_bootstrap_means([np.ones((1, 3)), np.ones((1, 2))], 10, np.random.default_rng(0))
