"""Resumable results: a JSONL file with one finished row per line, keyed, appended as each row completes.

A rerun reuses every finished row and computes only the missing ones; a line cut short by a crash or Ctrl-C is
dropped (and its row computed again). Eval, self-distillation and the notebooks' grids all write this way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["ResultStore", "run_resumable"]


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)                   # its folder is made by the first row added, not before
        self.rows: dict[str, dict] = {}
        good, bad = [], 0
        if self.path.exists():
            text = self.path.read_text()
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                    good.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
            if bad or (good and not text.endswith("\n")):
                tmp = self.path.with_suffix(self.path.suffix + ".tmp")
                tmp.write_text("".join(g + "\n" for g in good))
                tmp.replace(self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __getitem__(self, key: str) -> dict:
        return self.rows[key]

    def add(self, row: dict) -> dict:
        if "key" not in row:
            raise ValueError("a result row needs a 'key'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        self.rows[row["key"]] = row
        return row


def run_resumable(path: str | Path, items: Iterable, key: Callable[[object], str], compute: Callable[[object], dict],
                  progress: bool = True, desc: str | None = None) -> list[dict]:
    """For each item: the stored row under ``key(item)``, or ``compute(item)`` stored as it finishes."""
    from tqdm.auto import tqdm

    store = ResultStore(path)
    out = []
    items = list(items)
    for item in tqdm(items, desc=desc, disable=not progress):
        k = key(item)
        out.append(store[k] if k in store else store.add({"key": k, **compute(item)}))
    return out
