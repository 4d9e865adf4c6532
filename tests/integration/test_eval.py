"""The resumable eval engine on the default model: outputs, a killed run resumed, and its errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from swaa import SWAAConfig
from swaa.evaluation.run import EvalOptions, run_eval

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [SWAAConfig(), SWAAConfig(sliding_window_size=32, keep_first=4, force_fa_decode=True)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from transformers import AutoTokenizer

    from swaa.evaluation.data import make_task
    from swaa.models import default_model_path
    tok = AutoTokenizer.from_pretrained(default_model_path())
    rows = make_task("needle", tok, 200, n=3) + make_task("qa", tok, 200, n=2)
    d = tmp_path_factory.mktemp("data")
    df = pd.DataFrame(rows)
    df.to_parquet(d / "tasks.parquet")
    (d / "settings.json").write_text(json.dumps([{"swaa_config": c.to_dict(), "model_list": ["default"]}
                                                 for c in SETTINGS]))
    return d, df


def _lines(p):
    return p.read_text().splitlines() if p.exists() else []


def test_outputs(data, tmp_path):
    d, df = data
    res = run_eval([None], d / "settings.json", d / "tasks.parquet", tmp_path, options=EvalOptions(max_new_tokens=6),
                   progress=False)
    assert [r["mark"] for r in res] == ["full", "swa=32_sink=4_fadec"]
    summary = [json.loads(l) for l in _lines(tmp_path / "results.jsonl")]
    for s in summary:
        for field in ("model_name", "use_vllm", "sliding_window_size", "keep_first", "force_fa_decode",
                      "non_sliding_layers", "exact_match", "contains", "answer_nll_mean"):
            assert field in s
        assert s["n"] == 5 and s["by_task"].keys() == {"needle", "qa"}
        for cell in (s, *s["by_task"].values()):           # every cell: n, the mean and its 95% interval
            assert cell["n"] >= 1
            for m in ("exact_match", "contains", "token_f1", "answer_nll_mean"):
                assert cell[f"{m}_lo"] <= cell[m] <= cell[f"{m}_hi"], (m, cell)
        assert (s["by_task"]["needle"]["n"], s["by_task"]["qa"]["n"]) == (3, 2)
    # files and summary lines are keyed by the model's fingerprint and the setting's, with the readable name beside
    assert summary[0]["model_fingerprint"] == summary[1]["model_fingerprint"]
    assert summary[0]["setting_fingerprint"] != summary[1]["setting_fingerprint"]
    stem = f"default-{res[1]['model_fingerprint'][:8]}/swa=32_sink=4_fadec-{res[1]['setting_fingerprint'][:8]}"
    assert res[1]["model_name"] == "default" and res[1]["parquet"] == f"{stem}.parquet"
    assert res[1]["rows"] == f"rows/{stem}.jsonl" and (tmp_path / res[1]["rows"]).exists()
    rows = pd.read_parquet(tmp_path / res[1]["parquet"])
    assert sorted(rows["id"]) == sorted(df["id"]) and (rows["answer_tokens"] > 0).all()
    # the window costs likelihood of the right answer on these prompts
    assert summary[1]["answer_nll_mean"] > summary[0]["answer_nll_mean"]


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(data, tmp_path):
    d, df = data
    cmd = [sys.executable, "-m", "swaa.cli", "eval", "--dataset", str(d / "tasks.parquet"), "--settings",
           str(d / "settings.json"), "--out", str(tmp_path), "--batch-size", "1", "--max-new-tokens", "6"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (found := list(tmp_path.glob("rows/default-*/full-*.jsonl"))) or len(_lines(found[0])) < 2:
        assert proc.poll() is None and time.time() < deadline, "the eval never wrote two rows"
        time.sleep(0.2)
    first = found[0]
    os.kill(proc.pid, signal.SIGKILL)                      # no chance to clean up
    proc.wait()
    before = _lines(first)
    assert 2 <= len(before) < len(df)
    run_eval([None], d / "settings.json", d / "tasks.parquet", tmp_path, options=EvalOptions(max_new_tokens=6),
             progress=False)
    after = _lines(first)
    assert after[:len(before)] == before                  # finished rows untouched (same responses and timings)
    second = list(tmp_path.glob("rows/default-*/swa=32_sink=4_fadec-*.jsonl"))
    assert len(second) == 1
    for f in (first, *second):
        ids = [json.loads(l)["id"] for l in _lines(f)]
        assert sorted(ids) == sorted(df["id"])            # every row exactly once


def test_changed_dataset_is_detected_and_errors_are_clear(data, tmp_path):
    d, df = data
    opts = EvalOptions(max_new_tokens=4)
    run_eval([None], SETTINGS[:1], df.iloc[:2], tmp_path, options=opts, progress=False)
    with pytest.raises(ValueError, match="holds results for another dataset or other generation settings"):
        run_eval([None], SETTINGS[:1], df.iloc[:3], tmp_path, options=opts, progress=False)
    run_eval([None], SETTINGS[:1], df.iloc[1:3], tmp_path, options=opts, overwrite=True, progress=False)
    rows = [json.loads(l)["id"] for f in (tmp_path / "rows").rglob("*.jsonl") for l in _lines(f)]
    assert sorted(rows) == sorted(df["id"].iloc[1:3])       # overwrite starts over: no row of the old run is kept
    with pytest.raises(ValueError, match="all 5 prompts are longer than max_prompt_tokens=10"):
        run_eval([None], SETTINGS[:1], df, tmp_path / "b", options=EvalOptions(max_prompt_tokens=10), progress=False)
    with pytest.raises(ValueError, match="unknown model '/nowhere/model'"):
        run_eval(["/nowhere/model"], SETTINGS[:1], df, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="engine='nope' is unknown"):
        run_eval([None], SETTINGS[:1], df, tmp_path / "d", engine="nope", progress=False)
    with pytest.raises(ValueError, match="is empty"):
        run_eval([None], SETTINGS[:1], df.iloc[:0], tmp_path / "e", progress=False)
