"""Resumable JSONL results: rows are reused, a cut line is dropped and recomputed, nothing finished is lost."""
import json

import pytest

from swaa.results import ResultStore, run_resumable


def test_rows_are_written_as_they_finish_and_reused(tmp_path):
    path = tmp_path / "r.jsonl"
    calls = []

    def compute(x):
        calls.append(x)
        if x == 3 and len(calls) == 3:
            raise KeyboardInterrupt             # the user stops the run during the third item
        return {"value": x * x}

    with pytest.raises(KeyboardInterrupt):
        run_resumable(path, [1, 2, 3, 4], key=str, compute=compute, progress=False)
    assert [json.loads(l)["value"] for l in path.read_text().splitlines()] == [1, 4]   # finished rows kept
    rows = run_resumable(path, [1, 2, 3, 4], key=str, compute=compute, progress=False)
    assert [r["value"] for r in rows] == [1, 4, 9, 16]
    assert calls == [1, 2, 3, 3, 4]                                                     # nothing recomputed


def test_a_cut_line_is_dropped_and_recomputed(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"')
    store = ResultStore(path)
    assert "a" in store and "b" not in store
    assert path.read_text() == '{"key": "a", "v": 1}\n'
    store.add({"key": "b", "v": 2})
    assert [json.loads(l)["key"] for l in path.read_text().splitlines()] == ["a", "b"]
    with pytest.raises(ValueError, match="needs a 'key'"):
        store.add({"v": 3})
