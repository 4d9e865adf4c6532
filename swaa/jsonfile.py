"""JSON and JSON-lines files read with errors that name the file and the line, not only what the parser saw.

    read_json("settings.json")      # ValueError: settings.json: not valid JSON at line 3 column 5: Expecting ','
    read_jsonl("rows.jsonl")        # ValueError: rows.jsonl: line 7 is not valid JSON (column 12: ...)
    check_syntax("data.jsonl")      # the same errors for a file another reader (pandas) failed on; None if it parses
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json", "read_jsonl", "check_syntax"]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_json(path) -> object:
    """The value of a JSON file."""
    path = Path(path)
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_jsonl(path) -> list:
    """The values of a JSON-lines file, one per non-blank line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not valid JSON (column {e.colno}: {e.msg})") from None
    return rows


def check_syntax(path) -> None:
    """Raise the file-and-line error of a .json/.jsonl file that does not parse; do nothing for one that does."""
    path = Path(path)
    if path.suffix == ".jsonl":
        read_jsonl(path)
    elif path.suffix == ".json":
        read_json(path)
