"""Resumable JSONL results: rows are reused, a cut line is dropped (with a warning naming the file) and recomputed,
nothing finished is lost; datasets whose ids repeat are refused."""
import json

import pandas as pd
import pytest

from swaa.store.rows import ResultStore, read_rows, run_resumable


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
    with pytest.warns(UserWarning, match=f"{path}: dropped 1 incomplete line"):
        store = ResultStore(path)
    assert "a" in store and "b" not in store
    assert path.read_text() == '{"key": "a", "v": 1}\n'
    store.add({"key": "b", "v": 2})
    assert [json.loads(l)["key"] for l in path.read_text().splitlines()] == ["a", "b"]
    with pytest.raises(ValueError, match="needs a 'key'"):
        store.add({"v": 3})


def test_a_cut_line_warns_naming_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"')
    with pytest.warns(UserWarning, match=f"{path}: dropped 1 incomplete line"):
        assert [r["key"] for r in read_rows(path)] == ["a"]
    assert path.read_text().endswith('"v"')                  # reading alone leaves the file as it is
    assert read_rows(tmp_path / "missing.jsonl") == []


def test_a_truncated_summary_file_is_recovered_by_the_next_summary(tmp_path):
    """results.jsonl cut by a power loss: the next finished setting drops the cut line with a warning and writes
    the file whole again (atomically); readers such as tradeoff.load_eval read what is whole."""
    from swaa.evaluation.run import _append_summary
    from swaa.speed.tradeoff import load_eval

    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"key": k, "mark": k, "contains": 1.0}) for k in ("a", "b", "c")]
    path.write_text("\n".join(lines)[:-7])                  # the last line cut mid-way
    with pytest.warns(UserWarning, match=str(path)):
        assert [r["key"] for r in load_eval(path)] == ["a", "b"]
    with pytest.warns(UserWarning, match=str(path)):
        _append_summary(path, {"key": "c", "mark": "c", "contains": 0.5})
    assert path.read_text() == "\n".join(lines[:2] + [json.dumps({"key": "c", "mark": "c", "contains": 0.5})]) + "\n"
    assert not list(tmp_path.glob(".*tmp"))                  # no temporary file left behind


def test_duplicate_ids_are_refused_naming_them():
    from swaa.evaluation.data import validate_dataset

    rows = dict(prompt=list("abcdefghi"), question=["q"] * 9, answer=["x"] * 9)
    ok = pd.DataFrame(dict(rows, id=[f"r{i}" for i in range(9)]))
    assert validate_dataset(ok) is ok
    with pytest.raises(ValueError, match=r"has 1 duplicated id: 'r1'; give every row its own id"):
        validate_dataset(pd.DataFrame(dict(rows, id=["r0", "r1", "r1", "r3", "r4", "r5", "r6", "r7", "r8"])))
    ids = [1, 1, "1", 2, 2, 3, 3, 4, 4]                      # as stored, every id is a string: 1 and "1" are one
    with pytest.raises(ValueError, match=r"my.parquet has 4 duplicated ids: '1', '2', '3', '4'"):
        validate_dataset(pd.DataFrame(dict(rows, id=ids)), "my.parquet")
    many = pd.DataFrame(dict(prompt=["p"] * 14, question=["q"] * 14, answer=["a"] * 14, id=[i // 2 for i in range(14)]))
    with pytest.raises(ValueError, match=r"7 duplicated ids: '0', '1', '2', '3', '4' and 2 more"):
        validate_dataset(many)
