"""The intervals every eval cell carries: Wilson for proportions, a seeded bootstrap for means, paired differences."""
import math

import numpy as np
import pandas as pd
import pytest

from swaa.evaluation.stats import (bootstrap_mean, cell, interval, ordering, paired_difference, summary_table,
                                   wilson)


@pytest.mark.parametrize("k,n,lo,hi", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
                                       (1, 1, 0.2065, 1.0), (37, 100, 0.2818, 0.4678)])
def test_wilson_matches_the_textbook_values(k, n, lo, hi):
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_of_nothing_is_undefined():
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_bootstrap_is_seeded_order_free_and_covers_the_mean():
    v = np.random.default_rng(1).normal(2.0, 1.0, size=40)
    a, b = bootstrap_mean(v), bootstrap_mean(v[::-1].tolist())
    assert a == b                                            # same values, any order, same interval
    assert a[0] < v.mean() < a[1]
    half = (a[1] - a[0]) / 2                                 # about 1.96 standard errors
    assert half == pytest.approx(1.96 * v.std(ddof=1) / math.sqrt(v.size), rel=0.2)
    assert bootstrap_mean([3.0]) == (3.0, 3.0)


def test_interval_picks_wilson_for_scores_and_the_bootstrap_for_means():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert interval(scores, "contains") == (0.6, *wilson(3, 5))
    mean, lo, hi = interval([0.5, 1.5, 2.5, float("nan"), None], "answer_nll_mean")   # missing values left out
    assert mean == 1.5 and (lo, hi) == bootstrap_mean([0.5, 1.5, 2.5])


def test_cells_and_tables_carry_n_and_the_interval():
    rows = pd.DataFrame({"mark": ["full"] * 4 + ["swa"] * 4, "task": ["a", "a", "b", "b"] * 2,
                         "contains": [1, 1, 1, 0, 0, 1, 0, 0], "answer_nll_mean": [1.0, 1.2, 0.8, 1.1, 3, 2, 4, 3.5]})
    c = cell(rows, ["contains", "answer_nll_mean", "judge_score"])
    assert c["n"] == 8 and c["contains"] == 0.5 and "judge_score" not in c
    assert (c["contains_lo"], c["contains_hi"]) == wilson(4, 8)
    t = summary_table(rows, ["mark", "task"])
    assert t[["mark", "task"]].values.tolist() == [["full", "a"], ["full", "b"], ["swa", "a"], ["swa", "b"]]
    assert t["n"].tolist() == [2, 2, 2, 2] and t["contains"].tolist() == [1.0, 0.5, 0.5, 0.0]
    assert (t["answer_nll_mean_lo"] <= t["answer_nll_mean"]).all() and (t["answer_nll_mean"] <= t["answer_nll_mean_hi"]).all()


def test_paired_differences_separate_what_unpaired_intervals_cannot():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 2.0, size=30)                       # items differ a lot from each other...
    a, b = base, base + 0.3 + rng.normal(0, 0.05, size=30)   # ...and the setting adds 0.3 to every one
    _, lo_a, hi_a = interval(a, "answer_nll_mean")
    _, lo_b, hi_b = interval(b, "answer_nll_mean")
    assert lo_b < hi_a                                       # the two intervals overlap
    diff, lo, hi = paired_difference(a, b)
    assert diff == pytest.approx(0.3, abs=0.05) and lo > 0   # the paired difference does not
    rows = pd.DataFrame({"id": list(range(30)) * 3, "mark": ["x"] * 30 + ["y"] * 30 + ["z"] * 30,
                         "answer_nll_mean": np.concatenate([a, b, b + rng.normal(0, 0.05, size=30)])})
    pairs = ordering(rows, "answer_nll_mean", ["x", "y", "z"])
    assert [(p["a"], p["b"], p["n"], p["separated"]) for p in pairs] == [("x", "y", 30, True), ("y", "z", 30, False)]
