"""Resumable results: JSONL files of keyed rows, appended as each row completes, read back tolerantly.

A rerun reuses every finished row and computes only the missing ones; a line cut short by a crash, Ctrl-C or a
power loss is dropped with one warning naming the file (and its row computed again). Eval, self-distillation, the
judge's cache, LightTransfer and the notebooks' grids all write this way; files rewritten whole (``results.jsonl``,
the SFT loss log) go through :func:`atomic_write_text`, so they are old or new, never half written.

How results are keyed (fingerprints from :mod:`swaa.store.fingerprint`): a row's key holds everything that produced it,
never a name two different things can share.

- Eval: ``OUT/rows/<model name>-<model fp[:8]>/<mark>-<setting fp[:8]>.jsonl``, one row per prompt, keyed
  ``<model fp>-<setting fp>-<content fp>``. The model fingerprint covers the model's config, tokenizer and sampled
  weights; the setting fingerprint the SWAA config, the engine (hf and vllm are distinct), the dtype the model runs
  in and every generation option except batch size and device (they change speed and padding numerics, not what is
  computed); the content fingerprint the chat-formatted prompt, the answer and the choices. The finished setting's
  table is ``OUT/<model name>-<model fp[:8]>/<mark>-<setting fp[:8]>.parquet`` and its summary one line of
  ``OUT/results.jsonl`` keyed ``<model name>|<model fp>|<mark>|<setting fp>``, with ``model_name`` (readable),
  ``model_fingerprint``, ``setting_fingerprint`` and the two files' paths relative to OUT (``rows``, ``parquet``).
- Self-distillation: ``OUT/distill.jsonl`` keyed by the model fingerprint, the sampling settings and the prompt's
  content (chat prompt, question, answer, choices); each batch of prompts is seeded from its first prompt's key.
- SFT checkpoints carry a fingerprint of the model, the data and the settings; LightTransfer's rows, the loss grid
  and the speed grid key by the model fingerprint too.

Clearing results is deleting the folder (or a model's subfolders); ``swaa eval --overwrite`` starts over in a folder
made for other data or generation settings.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["ResultStore", "run_resumable", "read_rows", "atomic_write_text"]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a synced temporary file and a rename: a crash leaves the old or the new
    file, never a part of one (without the sync, a power loss after the rename can leave it empty or cut)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_rows(path: str | Path, *, require: str | None = None, repair: bool = False) -> list[dict]:
    """The rows of one of our own result files (JSONL, one object per line; a user's JSON file goes through
    :mod:`swaa.jsonfile`, whose errors name the line). A line that is not a whole object (or lacks the field
    ``require``) was cut short by a crash: it is dropped with one warning naming the file, and with ``repair`` the
    file is rewritten without it. A missing file reads as no rows."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    rows, good, bad = [], [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or (require is not None and require not in row):
                raise ValueError(line)
        except ValueError:
            bad += 1
            continue
        rows.append(row)
        good.append(line)
    if bad:
        warnings.warn(f"{path}: dropped {bad} incomplete line{'s' * (bad > 1)} (a write cut short by a crash or "
                      "power loss); the rows they held are computed again", stacklevel=2)
    if repair and (bad or (good and not text.endswith("\n"))):
        atomic_write_text(path, "".join(g + "\n" for g in good))
    return rows


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)                   # its folder is made by the first row added, not before
        self.rows: dict[str, dict] = {r["key"]: r for r in read_rows(self.path, require="key", repair=True)}

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
