"""lm-evaluation-harness tasks over our datasets: a JSONL file and a task YAML, scored as ``swaa eval`` scores.

    write_task(rows, "out/lm_eval_tasks", name="swaa_synthetic", max_new_tokens=32)
    # lm-eval run --include_path out/lm_eval_tasks --tasks swaa_synthetic --apply_chat_template ... (the swaa model:
    # swaa.evaluation.lm_eval_model)

The task generates greedily (``do_sample: false``), at most ``max_new_tokens`` tokens, with no stop sequence but the
end of turn, from each row's ``prompt`` as the user turn (lm-eval applies the chat template with
``--apply_chat_template``, as ``swaa eval`` always does), and scores each response with :func:`process_results`:
``swaa eval``'s exact match, containment and token F1 (thinking stripped, multiple choice by the letter). Nothing here
imports lm-eval: writing a task needs only the data.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_task", "process_results", "TASK_METRICS"]

TASK_METRICS = ("exact_match", "contains", "token_f1")


def process_results(doc: dict, results: list) -> dict:
    """``swaa eval``'s scoring of one generated response (thinking stripped; multiple choice by the letter)."""
    from .scoring import score_response
    scores = score_response(results[0], str(doc["answer"]), doc.get("choices"))
    return {m: scores[m] for m in TASK_METRICS}


def write_task(rows, folder: str | Path, name: str = "swaa_task", max_new_tokens: int = 32) -> Path:
    """A generation task for lm-eval over ``rows`` (a DataFrame with ``prompt``, ``answer``; ``id``, ``question``,
    ``task``, ``choices`` kept): ``FOLDER/NAME.jsonl`` and ``FOLDER/NAME.yaml`` (``--include_path FOLDER --tasks
    NAME``). Greedy, ``max_new_tokens`` new tokens, no stop sequence but the end of turn, scored by
    :func:`process_results`. Returns the YAML's path."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"task name {name!r}: use letters, digits and underscores")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    keep = [c for c in ("id", "prompt", "question", "answer", "task", "choices") if c in rows.columns]
    lines = []
    for rec in rows[keep].to_dict("records"):
        rec["answer"] = str(rec["answer"])
        if "choices" in rec:                   # numpy arrays from parquet, NaN where a row has none
            rec["choices"] = list(rec["choices"]) if not isinstance(rec["choices"], (str, float, type(None))) else None
        lines.append(json.dumps(rec))
    data.write_text("".join(line + "\n" for line in lines))
    metrics = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in TASK_METRICS)
    yaml = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data.resolve()))}\n"
            "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{prompt}}\"\ndoc_to_target: \"{{answer}}\"\n"
            f"generation_kwargs:\n  until: []\n  do_sample: false\n  max_gen_toks: {max_new_tokens}\n"
            "process_results: !function swaa.evaluation.lm_eval_task.process_results\n"
            f"metric_list:\n{metrics}metadata:\n  version: 1.0\n")
    path = folder / f"{name}.yaml"
    path.write_text(yaml)
    return path
