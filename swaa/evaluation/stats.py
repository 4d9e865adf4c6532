"""95% intervals for every cell the eval writes: Wilson for proportions, a seeded percentile bootstrap for means.

A *cell* is one metric over a group of rows (a setting, a setting x task, a needle depth x length): its mean, ``n``
and the interval, written as ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` beside one ``n``:

    cell(rows, ["contains", "answer_nll_mean"])  ->  {"n": 10, "contains": 0.4, "contains_lo": 0.17, ...}
    summary_table(per_row, by=["mark", "task"])  ->  one row per group, the same columns
    ordering(per_row, "answer_nll_mean", marks)   ->  which neighbours in a ranking the data separate

Proportions (a 0/1 score per row: exact match, containment, a judge's verdict) get the Wilson score interval, which
stays inside [0, 1] and is honest at 0/n and n/n, where the normal approximation collapses to a point. Means (answer
NLL, token F1) get a percentile bootstrap over the rows, seeded and over the sorted values, so the same values give
the same interval in any order, on any machine. Differences between two settings on the same items are paired
(the bootstrap resamples items, not each setting alone): most of the spread between items cancels.
"""
from __future__ import annotations

import math

__all__ = ["Z95", "PROPORTIONS", "wilson", "bootstrap_mean", "interval", "cell", "summary_table", "paired_difference",
           "ordering"]

Z95 = 1.959963984540054
PROPORTIONS = ("exact_match", "contains", "judge_score")     # one 0/1 score per row
N_BOOT = 2000
SEED = 0


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if k <= 0 else centre - half), (1.0 if k >= n else centre + half)     # exact at 0/n and n/n


def bootstrap_mean(values, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded; order does not matter)."""
    import numpy as np
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def interval(values, metric: str) -> tuple[float, float, float]:
    """(mean, lo, hi) of one metric's values: Wilson for the proportions, the bootstrap for everything else."""
    import numpy as np
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))],
                   dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    lo, hi = wilson(float(v.sum()), v.size) if metric in PROPORTIONS else bootstrap_mean(v)
    return mean, lo, hi


def cell(rows, metrics) -> dict:
    """``n`` and each metric's mean and interval over ``rows`` (a DataFrame); metrics it lacks are left out."""
    out = {"n": int(len(rows))}
    for m in metrics:
        if m in rows:
            out[m], out[f"{m}_lo"], out[f"{m}_hi"] = interval(rows[m].tolist(), m)
    return out


def summary_table(rows, by, metrics=("contains", "exact_match", "answer_nll_mean")):
    """One row per group of ``by`` (a column or a list of them; groups in order of appearance) with ``n`` and each
    metric's mean, ``_lo`` and ``_hi``."""
    import pandas as pd
    by = [by] if isinstance(by, str) else list(by)
    table = [dict(zip(by, key if isinstance(key, tuple) else (key,)), **cell(g, metrics))
             for key, g in rows.groupby(by, sort=False)]
    return pd.DataFrame(table)


def paired_difference(a, b, n_boot: int = N_BOOT, seed: int = SEED) -> tuple[float, float, float]:
    """Mean of ``b - a`` over paired items (two equal-length sequences) and its percentile bootstrap interval."""
    import numpy as np
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap_mean(d, n_boot=n_boot, seed=seed)
    return float(d.mean()), lo, hi


def ordering(rows, metric: str, order, key: str = "id", setting: str = "mark") -> list[dict]:
    """For each neighbouring pair of ``order`` (settings ranked by ``metric``): the paired difference over the items
    both scored, its interval, and ``separated`` (the interval excludes 0: the data support the order between them)."""
    wide = rows.pivot_table(index=key, columns=setting, values=metric, aggfunc="first")
    pairs = []
    for a, b in zip(order, order[1:]):
        both = wide[[a, b]].dropna()
        diff, lo, hi = paired_difference(both[a], both[b])
        pairs.append(dict(a=a, b=b, n=len(both), diff=diff, lo=lo, hi=hi, separated=bool(lo > 0 or hi < 0)))
    return pairs
