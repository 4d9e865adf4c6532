"""Needle in a haystack: the answer NLL of a needle's value by needle depth x context length, per SWAA setting.

    rows = make_needle_grid(tok, lengths=(256, 512, 1024), depths=(0, .25, .5, .75, 1), n=3)
    per_row = needle_nll(model, tok, [SWAAConfig(), best], rows, "out/needle.jsonl")   # resumable
    table = needle_table(per_row)     # one row per (mark, context_length, depth): n, answer_nll_mean, _lo, _hi

Each row's prompt goes through the chat template; its score is the NLL of the needle's value (7 digits) under the
setting, with FA decode applied to the answer's tokens as in generation (:func:`swaa.evaluation.scoring.answer_nll`):
one forward per row, so the grid runs on CPU where generating every answer would not. Rows are stored as they finish,
keyed by the model's fingerprint, the setting and the row's chat prompt and answer; a rerun computes only what is
missing. The model is left at full attention.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["needle_nll", "needle_table"]


def needle_nll(model, tok, configs, rows, results: str | Path, progress: bool = True):
    """Per (setting, row): ``mark``, ``id``, ``context_length``, ``depth``, ``answer_nll_mean``, ``prompt_tokens``."""
    import pandas as pd

    from ..config import SWAAConfig
    from ..integrations.transformers import apply_swaa
    from ..store.fingerprint import fingerprint, model_fingerprint
    from ..store.rows import run_resumable
    from .prompts import chat_prompts
    from .scoring import answer_nll

    configs = [c if isinstance(c, SWAAConfig) else SWAAConfig.from_dict(c) for c in configs]
    chat = chat_prompts(tok, rows["prompt"], ids=rows["id"])
    answers = [str(a) for a in rows["answer"]]
    model_fp = model_fingerprint(model)

    def compute(item):
        cfg, i = item
        apply_swaa(model, cfg)
        nll = answer_nll(model, chat.ids[i], tok(answers[i], add_special_tokens=False)["input_ids"])
        return dict(mark=cfg.mark, id=str(rows["id"].iloc[i]), context_length=int(rows["context_length"].iloc[i]),
                    depth=float(rows["depth"].iloc[i]), prompt_tokens=len(chat.ids[i]),
                    answer_nll_mean=nll["answer_nll_mean"])

    items = [(cfg, i) for cfg in configs for i in range(len(rows))]
    out = run_resumable(results, items, key=lambda it: fingerprint(model_fp, it[0].to_dict(), chat.chat[it[1]],
                                                                    answers[it[1]]),
                        compute=compute, progress=progress, desc="needle grid")
    apply_swaa(model, None)
    return pd.DataFrame(out).drop(columns="key")


def needle_table(per_row):
    """One row per (mark, context_length, depth) with ``n`` and the answer NLL's mean and 95% interval."""
    from .stats import summary_table
    return summary_table(per_row, ["mark", "context_length", "depth"], metrics=("answer_nll_mean",))
