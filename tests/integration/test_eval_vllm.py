"""`swaa eval --engine vllm`: the same rows as the HF engine (greedy, fp32, one prompt per HF batch so no padding
is involved), results marked use_vllm, and a rerun recomputes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from swaa import SWAAConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _eval(tmp, engine, settings, extra=()):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp / engine
    cmd = [sys.executable, "-m", "swaa.cli", "eval", "--engine", engine, "--model", "default", "--dataset",
           "synthetic:200:1", "--settings", str(settings), "--out", str(out), "--max-new-tokens", "8",
           "--batch-size", "1", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_vllm_engine_matches_hf_engine_and_resumes(tmp_path):
    cfg = SWAAConfig(sliding_window_size=32, keep_first=4, force_fa_decode=True)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps([{"swaa_config": cfg.to_dict()}]))
    v = _eval(tmp_path, "vllm", settings)
    h = _eval(tmp_path, "hf", settings)
    sv, sh = ([json.loads(l) for l in (o / "results.jsonl").read_text().splitlines()] for o in (v, h))
    rv, rh = pd.read_parquet(v / sv[0]["parquet"]), pd.read_parquet(h / sh[0]["parquet"])
    assert len(rv) == len(rh) == 5
    assert rv["response"].tolist() == rh["response"].tolist()
    assert rv["answer_nll_mean"].round(4).tolist() == rh["answer_nll_mean"].round(4).tolist()
    assert sv[0]["use_vllm"] is True and sv[0]["keep_first"] == 4
    assert sv[0]["model_fingerprint"] == sh[0]["model_fingerprint"]          # one model, two engines: two settings
    assert sv[0]["setting_fingerprint"] != sh[0]["setting_fingerprint"]
    rows = (v / sv[0]["rows"]).read_text()
    _eval(tmp_path, "vllm", settings)                          # everything is finished: no engine, same rows
    assert (v / sv[0]["rows"]).read_text() == rows
