"""Bootstrap confidence intervals and paired significance tests on item-level scores.

Every benchmark run scores the same items (MMLU questions, held-out instructions, images,
ScienceQA problems), and every method is trained with several seeds. The scores of one
method therefore form a matrix of shape (n_seeds, n_items), and its reported value is
the mean of that matrix.

Interval: a two-way bootstrap, the "pigeonhole bootstrap" of Owen (2007). Each replicate
draws the seed rows with replacement and, independently, the item columns with replacement.
The same item columns serve every seed row of a replicate, because all seeds scored the
same items. The replicate statistic is the mean of the resampled matrix. The interval is
the percentile interval of the replicates (Efron and Tibshirani 1993): its bounds are the
(1 - confidence) / 2 and (1 + confidence) / 2 quantiles, with numpy's default linear
interpolation. With one seed only the items vary, and with one item only the seeds vary.

NOTE: with several seeds the interval errs on the wide side. Owen (2007) shows that this
bootstrap overestimates the variance of the mean. The excess is small when item (and seed)
effects dominate the scores. When the scores are independent noise, the replicate variance
was 1.9, 2.2 and 2.6 times the variance of the mean with 2, 3 and 5 seeds. These factors
come from a simulation with 400 items and 20 data sets each, and they approach 3 as the
number of seeds grows.

Test: a paired approximate randomization test on items (Noreen 1989; Dror et al. 2018).
For item j, d_j is the seed-averaged score of method a minus that of method b. Under the
null hypothesis the sign of each d_j is as likely to be + as -. Each permutation flips
every sign independently with probability 1/2, and the test counts the permutations
whose |sum of d_j| is at least the observed one. The two-sided p-value is
(count + 1) / (permutations + 1), so it is never 0. The test conditions on the runs that
were trained, so it tests item-level differences, not the variation between seeds.

Bootstrap p-value: the interval's replicates of the difference also give a two-sided
p-value that counts the variation between seeds, by inverting the percentile interval. It
is twice the smaller share of replicates on either side of 0, each share counted as
(count + 1) / (resamples + 1), and at most 1. It is below 1 - confidence when 0 lies
outside the interval, up to that correction. With one seed per method both p-values test
the items alone. With several, a seed that differs from the others moves the bootstrap
p-value but not the sign-flip one.

References:
- B. Efron and R. J. Tibshirani (1993). An Introduction to the Bootstrap. Chapman & Hall.
- A. B. Owen (2007). The pigeonhole bootstrap. Annals of Applied Statistics 1(2), 386-411.
  doi:10.1214/07-AOAS122.
- E. W. Noreen (1989). Computer-Intensive Methods for Testing Hypotheses: An Introduction.
  Wiley.
- R. Dror, G. Baumer, S. Shlomov and R. Reichart (2018). The Hitchhiker's Guide to
  Testing Statistical Significance in Natural Language Processing. ACL 2018, P18-1128.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Upper bound on the elements of one block of resampling counts or sign flips (32 MiB as
# int64). Replicates are drawn in blocks of this size, so memory does not grow with
# `resamples` or `permutations`.
BLOCK_ELEMENTS = 1 << 22

# Sums of sign-flipped differences that are equal in exact arithmetic can differ in their
# last bits. A flipped sum counts as at least as extreme as the observed one when it is
# below it by no more than this fraction of sum(|d_j|).
TIE_TOLERANCE = 1e-9

PERMUTATION_TEST = "paired approximate randomization (sign flip) on items"

# Replicates are sums of many products, so a value that is 0 in exact arithmetic (an interval
# bound, a replicate difference) can come out as a tiny rounding error, such as -1.7e-18.
ROUNDING_DIGITS = 12


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval at level `confidence`."""

    mean: float
    low: float
    high: float
    confidence: float


def bootstrap_interval(scores: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> Interval:
    """Compute the mean of `scores` and its two-way bootstrap percentile interval.

    `scores` has shape (n_seeds, n_items): row s contains the per-item scores of the run
    trained with seed s, and every row covers the same items in the same order. A 1-D
    array counts as one seed. The same arguments return the same interval (with the same
    numpy version, whose Generator streams this relies on).
    Raises ValueError for NaN or infinite scores, empty or 3-D arrays and invalid
    confidence, resamples or seed.
    """
    matrix = _as_score_matrix(scores, "scores")
    _check_settings(confidence, resamples, seed)

    replicates = two_way_bootstrap_means([matrix], resamples, np.random.default_rng(seed))  # (resamples, 1)
    mean = float(matrix.mean())
    low, high = _percentile_bounds(replicates[:, 0], confidence)
    return Interval(mean=mean, low=low, high=high, confidence=float(confidence))


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                      permutations: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Compare two methods scored on the same items: mean difference, interval and p-value.

    `a` has shape (n_seeds_a, n_items) and `b` has shape (n_seeds_b, n_items), with the
    items in the same order. `b` may have one row, such as the scores of the base model.
    The interval is a two-way bootstrap of mean(a) - mean(b) that draws one set of item
    columns for both methods and the seed rows of each method separately. The p-value is
    the two-sided paired approximate randomization test described in the module
    docstring, and "p_value_bootstrap" the bootstrap p-value described there. Returns a dict
    with "difference", "low", "high", "confidence", "p_value", "p_value_bootstrap", "n_items",
    "n_seeds_a", "n_seeds_b", "resamples", "permutations" and "test".
    Raises ValueError when the item counts differ and for the inputs that
    bootstrap_interval rejects, or when permutations is below 1.
    """
    matrix_a = _as_score_matrix(a, "a")
    matrix_b = _as_score_matrix(b, "b")
    if matrix_a.shape[1] != matrix_b.shape[1]:
        raise ValueError(
            f"a has {matrix_a.shape[1]} items but b has {matrix_b.shape[1]}; "
            "pass the scores of both methods on the same items in the same order"
        )
    _check_settings(confidence, resamples, seed)
    _check_count(permutations, "permutations")

    # Separate streams, so the p-value does not depend on `resamples` and the interval
    # does not depend on `permutations`.
    bootstrap_stream, permutation_stream = np.random.SeedSequence(seed).spawn(2)

    replicates = two_way_bootstrap_means([matrix_a, matrix_b], resamples,
                                         np.random.default_rng(bootstrap_stream))  # (resamples, 2)
    differences = replicates[:, 0] - replicates[:, 1]
    low, high = _percentile_bounds(differences, confidence)

    item_differences = matrix_a.mean(axis=0) - matrix_b.mean(axis=0)  # (n_items,)
    p_value = _sign_flip_p_value(item_differences, permutations, np.random.default_rng(permutation_stream))
    log.debug("paired difference on %d items: %d permutations, p = %.4g", matrix_a.shape[1], permutations, p_value)

    return {
        "difference": float(matrix_a.mean() - matrix_b.mean()),
        "low": low,
        "high": high,
        "confidence": float(confidence),
        "p_value": p_value,
        "p_value_bootstrap": _bootstrap_p_value(differences),
        "n_items": int(matrix_a.shape[1]),
        "n_seeds_a": int(matrix_a.shape[0]),
        "n_seeds_b": int(matrix_b.shape[0]),
        "resamples": int(resamples),
        "permutations": int(permutations),
        "test": PERMUTATION_TEST,
    }


def two_way_bootstrap_means(groups: Sequence[np.ndarray], resamples: int,
                            rng: np.random.Generator) -> np.ndarray:
    """Draw two-way bootstrap replicates of the mean of each (n_seeds, n_items) matrix.

    All matrices must have the same number of items. Each replicate draws one multiset of
    item columns shared by all groups and, for each group, its own multiset of seed rows.
    Returns an array of shape (resamples, len(groups)). Raises ValueError for the inputs
    that bootstrap_interval rejects and when the item counts differ.
    """
    groups = [_as_score_matrix(matrix, f"groups[{index}]") for index, matrix in enumerate(groups)]
    _check_count(resamples, "resamples")
    n_items = groups[0].shape[1] if groups else 0
    if not groups or any(matrix.shape[1] != n_items for matrix in groups):
        raise ValueError(
            f"groups must be one or more score matrices with the same number of items, got item counts "
            f"{[matrix.shape[1] for matrix in groups]}"
        )
    # Replicates are computed on centred scores and shifted back at the end, so rounding
    # errors scale with the spread of the scores, not with their level.
    centred = [matrix - matrix.mean() for matrix in groups]
    block = max(1, min(resamples, BLOCK_ELEMENTS // n_items))
    replicates = np.empty((resamples, len(groups)))

    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        item_counts = _resample_counts(rng, size, n_items)  # (size, n_items)
        for column, matrix in enumerate(centred):
            n_seeds = matrix.shape[0]
            seed_counts = _resample_counts(rng, size, n_seeds)  # (size, n_seeds)
            # Mean of the resampled matrix = seed_counts^T X item_counts / (n_seeds n_items).
            item_weighted = item_counts @ matrix.T  # (size, n_seeds)
            replicates[start : start + size, column] = (
                (seed_counts * item_weighted).sum(axis=1) / (n_seeds * n_items)
            )

    for column, matrix in enumerate(groups):
        replicates[:, column] += matrix.mean()
    return replicates


def _resample_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """Return how often each of n units is drawn in `size` resamples of n draws with replacement.

    Row r of the (size, n) result sums to n. It is the multinomial(n, 1/n) count vector of
    one bootstrap resample.
    """
    draws = rng.integers(0, n, size=(size, n))  # (size, n)
    # Offset each row's draws into its own range of n bins, so one bincount counts all rows.
    offsets = (np.arange(size) * n)[:, None]  # (size, 1)
    counts = np.bincount((draws + offsets).ravel(), minlength=size * n)
    return counts.reshape(size, n).astype(np.float64)


def _sign_flip_p_value(differences: np.ndarray, permutations: int, rng: np.random.Generator) -> float:
    """Return the two-sided approximate randomization p-value of the per-item differences.

    Each permutation multiplies every difference by an independent random sign. The
    p-value is (count + 1) / (permutations + 1), where count is the number of permutations
    whose |sum| is at least the observed |sum| within TIE_TOLERANCE.
    """
    n_items = differences.shape[0]
    observed = abs(float(differences.sum()))
    tolerance = TIE_TOLERANCE * float(np.abs(differences).sum())
    block = max(1, min(permutations, BLOCK_ELEMENTS // n_items))
    count = 0

    for start in range(0, permutations, block):
        size = min(block, permutations - start)
        flipped = rng.integers(0, 2, size=(size, n_items), dtype=np.int8)  # (size, n_items), 1 = flip
        # sum(sign_j d_j) with sign_j = 1 - 2 flip_j.
        sums = differences.sum() - 2.0 * (flipped.astype(np.float64) @ differences)  # (size,)
        count += int(np.count_nonzero(np.abs(sums) >= observed - tolerance))

    return (count + 1) / (permutations + 1)


def _bootstrap_p_value(differences: np.ndarray) -> float:
    """Return the two-sided p-value of a zero difference from bootstrap replicates of the difference.

    Replicates within ROUNDING_DIGITS decimals of 0 count on both sides.
    """
    rounded = np.round(differences, ROUNDING_DIGITS)
    resamples = rounded.shape[0]
    below = (np.count_nonzero(rounded <= 0) + 1) / (resamples + 1)
    above = (np.count_nonzero(rounded >= 0) + 1) / (resamples + 1)
    return min(1.0, 2.0 * min(below, above))


def _percentile_bounds(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Return the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the replicates.

    The bounds are rounded to ROUNDING_DIGITS decimals, so a bound that is 0 or 1 in exact
    arithmetic does not come out as -1e-18 or 0.9999999999999999.
    """
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1.0 - alpha / 2])
    # Adding 0.0 turns a rounded -0.0 into 0.0, which tables print without a sign.
    return round(float(low), ROUNDING_DIGITS) + 0.0, round(float(high), ROUNDING_DIGITS) + 0.0


def _as_score_matrix(scores: np.ndarray, name: str) -> np.ndarray:
    """Return `scores` as a finite float64 matrix of shape (n_seeds, n_items), or raise ValueError."""
    try:
        matrix = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array of shape (n_seeds, n_items): {error}") from None

    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ValueError(f"{name} must have shape (n_seeds, n_items), got shape {matrix.shape}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {matrix.shape}); it needs at least one seed and one item")

    invalid = ~np.isfinite(matrix)
    if invalid.any():
        row, column = (int(i) for i in np.argwhere(invalid)[0])
        raise ValueError(
            f"{name}[{row}, {column}] (seed row {row}, item {column}) is {matrix[row, column]}, and "
            f"{int(invalid.sum())} scores in all are NaN or infinite; fix or rerun the evaluation that produced them"
        )
    return matrix


def _check_settings(confidence: float, resamples: int, seed: int) -> None:
    """Raise ValueError unless 0 < confidence < 1, resamples is an integer >= 1 and seed an integer >= 0."""
    valid_number = isinstance(confidence, numbers.Real) and not isinstance(confidence, bool)
    if not valid_number or not math.isfinite(confidence) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    _check_count(resamples, "resamples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_count(value: int, name: str) -> None:
    """Raise ValueError unless `value` is an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
