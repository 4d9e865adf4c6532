"""Accuracy against time: join eval results with speed results (measured or predicted), the Pareto front, advice.

A *point* is one setting (``mark``) with a time in seconds and an accuracy measure: ``answer_nll_mean`` (lower is
better; its increase over full attention is the loss) or ``contains`` (higher is better). ``speedup`` is full
attention's time over the setting's. A point is on the Pareto front when no other point is at least as fast and at
least as accurate and strictly better in one of the two.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..jsonfile import read_json
from ..store.rows import read_rows

__all__ = ["load_eval", "load_speed", "tradeoff_table", "pareto_front", "advise", "row_time", "predicted_rows"]

LOWER_IS_BETTER = {"answer_nll_mean": True, "contains": False, "exact_match": False, "token_f1": False,
                   "judge": False, "attention_kept": False}


def load_eval(path) -> list[dict]:
    """Eval results: a CSV with a ``mark`` column (``data/results/*.csv``) or run_eval's ``results.jsonl``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"eval results {path} not found; give a CSV with a 'mark' column (e.g. "
                                "data/results/smollm2_synthetic.csv) or a run_eval results.jsonl")
    if path.suffix == ".csv":
        with path.open() as f:
            rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    else:
        rows = read_rows(path)
    if not rows or not isinstance(rows[0], dict) or "mark" not in rows[0]:
        raise ValueError(f"{path}: eval results need a 'mark' column (the SWAAConfig mark of each setting)")
    return rows


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def load_speed(path, model: str | None = None, n: int | None = None) -> list[dict]:
    """Speed rows from benchmarks/e2e.py's JSON (or its rows .jsonl, or ``swaa speed``'s), for one model and length.

    Without ``model``/``n`` the only (model, n) in the file is used; several is an error naming the choices."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"speed results {path} not found; run benchmarks/e2e.py or `swaa speed` first")
    data = read_json(path) if path.suffix == ".json" else read_rows(path)
    rows = data.get("rows") if isinstance(data, dict) else data if path.suffix != ".json" else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: not speed results (benchmarks/e2e.py JSON with 'rows', or swaa speed JSON lines)")
    rows = [r for r in rows if r.get("kind", "row") == "row" and "prefill_s" in r]
    pairs = sorted({(r.get("model"), r["n"]) for r in rows}, key=str)
    rows = [r for r in rows if (model is None or r.get("model") == model) and (n is None or r["n"] == n)]
    left = sorted({(r.get("model"), r["n"]) for r in rows}, key=str)
    if len(left) != 1:
        raise ValueError(f"{path}: {'no rows' if not left else 'several (model, length) pairs'} for model={model!r} "
                         f"n={n!r}; choose one of {pairs} with --model and --length")
    return rows


def row_time(r: dict, time: str = "prefill", gen_tokens: int = 256) -> float:
    """Seconds of a speed row: ``prefill`` (time to first token), ``decode`` (one step), or ``total`` (prefill +
    ``gen_tokens`` decode steps)."""
    if time == "prefill":
        return r["prefill_s"]
    if time == "decode":
        return r["decode_step_ms"] / 1e3
    if time == "total":
        return r["prefill_s"] + gen_tokens * r["decode_step_ms"] / 1e3
    raise ValueError(f"time={time!r}: use 'prefill', 'decode' or 'total'")


def pareto_front(points: list[dict], x: str = "seconds", y: str = "answer_nll_mean",
                 y_lower_is_better: bool = True) -> list[bool]:
    """For each point: is it on the front of (lower ``x``, better ``y``)?"""
    sign = 1 if y_lower_is_better else -1
    out = []
    for p in points:
        px, py = p[x], sign * p[y]
        dominated = any(q is not p and q[x] <= px and sign * q[y] <= py and (q[x] < px or sign * q[y] < py)
                        for q in points)
        out.append(not dominated)
    return out


def tradeoff_table(eval_rows: list[dict] | None, speed_rows: list[dict], *, metric: str = "answer_nll_mean",
                   time: str = "prefill", gen_tokens: int = 256) -> list[dict]:
    """One point per mark found in both (every speed mark when ``eval_rows`` is None and the speed rows carry
    ``metric``): seconds, speedup over ``full``, the metric and its change from full, and the Pareto flag."""
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"metric={metric!r}: use one of {sorted(LOWER_IS_BETTER)}")
    acc = {r["mark"]: r for r in eval_rows} if eval_rows is not None else {r["mark"]: r for r in speed_rows}
    pts = []
    for r in speed_rows:
        if r["mark"] in acc and acc[r["mark"]].get(metric) is not None:
            pts.append(dict(mark=r["mark"], seconds=row_time(r, time, gen_tokens), **{metric: acc[r["mark"]][metric]},
                            swaa_config=r.get("swaa_config")))
    if not pts:
        raise ValueError(f"no setting has both a time and {metric!r}: the speed marks are "
                         f"{sorted(r['mark'] for r in speed_rows)}, the eval marks {sorted(acc)}; measure the same "
                         "settings in both, or choose a --metric the results carry")
    full = [p for p in pts if p["mark"] == "full"]
    if not full:
        raise ValueError(f"no 'full' setting in both the speed and the eval results (marks: {sorted(acc)}); "
                         "speed-ups and accuracy changes are relative to full attention")
    for p in pts:
        p["speedup"] = full[0]["seconds"] / p["seconds"]
        p["delta"] = p[metric] - full[0][metric]
    for p, on in zip(pts, pareto_front(pts, "seconds", metric, LOWER_IS_BETTER[metric])):
        p["pareto"] = on
    return pts


def advise(points: list[dict], *, metric: str = "answer_nll_mean", min_speedup: float | None = None,
           max_loss: float | None = None) -> list[dict]:
    """Settings that meet the targets, best first; only Pareto-front points are named.

    ``min_speedup``: at least this speed-up over full attention; then the most accurate first.
    ``max_loss``: lose at most this much accuracy (NLL increase, or drop of a higher-is-better metric); then the
    fastest first. Both: meet both, fastest first. Neither: the whole front, fastest first.
    """
    if min_speedup is not None and min_speedup <= 0:
        raise ValueError(f"min_speedup={min_speedup}: give a speed-up factor > 0, e.g. 1.5")
    if max_loss is not None and max_loss < 0:
        raise ValueError(f"max_loss={max_loss}: give a loss >= 0, e.g. 0.1 (NLL nats) or 0.05 (accuracy)")
    lower = LOWER_IS_BETTER[metric]

    def loss(p):
        return p["delta"] if lower else -p["delta"]
    ok = [p for p in points if p["pareto"] and (min_speedup is None or p["speedup"] >= min_speedup - 1e-12)
          and (max_loss is None or loss(p) <= max_loss + 1e-12)]
    if min_speedup is not None and max_loss is None:
        return sorted(ok, key=lambda p: (loss(p), -p["speedup"]))
    return sorted(ok, key=lambda p: (-p["speedup"], loss(p)))


def predicted_rows(shape, settings, n: int, rates) -> list[dict]:
    """Speed rows predicted by the cost model alone (no run): one per setting, with ``attention_kept``, the
    fraction of full attention's (query, key) pairs the setting keeps in prefill (an accuracy proxy when no eval
    results are given: more kept is closer to the model as trained)."""
    from .costmodel import predict_decode, predict_prefill, prefill_cost
    full_pairs = prefill_cost(shape, None, n)["attn_flops"]
    rows = []
    for cfg in settings:
        rows.append(dict(kind="row", model=shape.name, n=n, mark=cfg.mark, swaa_config=cfg.to_dict(),
                         prefill_s=predict_prefill(shape, cfg, n, rates)["seconds"],
                         decode_step_ms=predict_decode(shape, cfg, n, rates)["seconds"] * 1e3,
                         attention_kept=prefill_cost(shape, cfg, n)["attn_flops"] / full_pairs, predicted=True))
    return rows
