"""The LLM judge over HTTP against a real local OpenAI-compatible server: vLLM on CPU serving the default model."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from swaa import SWAAConfig
from swaa.evaluation.run import EvalOptions, run_eval
from swaa.evaluation.judge import Judge, JudgeError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from swaa.models import default_model_path
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}     # vLLM must not use the interpreter
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                             str(default_model_path()), "--served-model-name", "smollm2", "--host", "127.0.0.1",
                             "--port", str(port), "--max-model-len", "2048", "--dtype", "float32"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 420
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=5)
            break
        except OSError:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "vLLM did not start within 420 s"
            time.sleep(2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_judge_talks_http_and_caches(server, tmp_path):
    judge = Judge(base_url=server, model="smollm2", cache_path=tmp_path / "cache.jsonl")
    g = judge.grade("What is the special magic number for amber-onyx-123?", "4567890",
                    "<think>searching</think>The special magic number is 4567890.")
    assert g["judge_score"] in (0.0, 1.0) and g["judge_raw"]
    calls = judge.calls
    assert judge.grade("What is the special magic number for amber-onyx-123?", "4567890",
                       "<think>other thoughts</think>The special magic number is 4567890.") == g  # thinking ignored
    assert judge.calls == calls                                                # served from the cache
    again = Judge(base_url=server, model="smollm2", cache_path=tmp_path / "cache.jsonl")
    assert again.grade("What is the special magic number for amber-onyx-123?", "4567890",
                       "The special magic number is 4567890.") == g and again.calls == 0


@pytest.mark.slow
def test_eval_with_the_judge(server, tmp_path):
    df = pd.DataFrame({"prompt": ["Remember: the code word is tulip. What is the code word?"],
                       "question": ["What is the code word?"], "answer": ["tulip"], "id": ["r0"]})
    judge = Judge(base_url=server, model="smollm2", cache_path=tmp_path / "judge.jsonl")
    res = run_eval([None], [SWAAConfig()], df, tmp_path, options=EvalOptions(max_new_tokens=8), progress=False,
                   judge=judge)
    assert res[0]["judge_score"] in (0.0, 1.0)


def test_unreachable_judge_is_a_clear_error_and_rows_are_kept(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    judge = Judge(base_url=url, model="x", retries=1, timeout=2)
    with pytest.raises(JudgeError, match=f"the judge at {url} .* did not answer after 2 attempts"):
        judge.grade("q", "a", "r")
    df = pd.DataFrame({"prompt": ["Say hi."], "question": ["Say hi."], "answer": ["hi"], "id": ["r0"]})
    with pytest.raises(JudgeError):
        run_eval([None], [SWAAConfig()], df, tmp_path, options=EvalOptions(max_new_tokens=4), progress=False,
                 judge=judge)
    [rows] = tmp_path.glob("rows/default-*/full-*.jsonl")
    assert rows.read_text().count('"id": "r0"') == 1                                          # generation kept
    with pytest.raises(ValueError, match="needs a base URL and a model"):
        Judge(base_url=None, model=None)
