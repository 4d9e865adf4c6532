"""The SWAA vLLM plugin in real vLLM (CPU), against HF + swaa: greedy tokens and prompt log-probabilities (fp32,
<= 1e-3) for the default model and a tiny Qwen3 under each recipe, and a tiny Mistral whose own window is turned
off, with chunked prefill, prefix caching and mixed batches (prefill chunks and decode rows in one step); the same
Mistral under vLLM's own sliding window against SWAA with that window and no sinks; full attention unchanged without
a config; KV blocks held per request bounded by the sinks and the window in windowed layers while full-attention
layers keep theirs (vLLM's own block tables, one KV-cache group per kind of layer)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swaa import SWAAConfig, apply_swaa
from swaa.evaluation.data import offline_token_ids
from swaa import load_model
from swaa.models import default_model_path
from tests.conftest import free_port, listening_addresses

from .tiny_models import make_model

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
W, S, BS = 32, 4, 32
NATIVE_W = 16          # the tiny Mistral's own window
CONFIGS = {
    "full": None,
    "swa": SWAAConfig(sliding_window_size=W),
    "swa_sinks": SWAAConfig(sliding_window_size=W, keep_first=S),
    "swa_fadec": SWAAConfig(sliding_window_size=W, force_fa_decode=True),
    "swa_layers": SWAAConfig(sliding_window_size=W, non_sliding_layers=[1, 3]),
    "combined": SWAAConfig(sliding_window_size=W, keep_first=S, force_fa_decode=[0, 2], non_sliding_layers=[3]),
}
MAX_TOKENS = 10
CHAT = ("The GNU General Public License is a free, copyleft license for software and other kinds of works. "
        "The licenses for most software and other practical works are designed to take away your freedom to share "
        "and change the works. Which license is described above, and what kind of license is it?")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    default, tok = load_model()
    tiny = make_model("qwen3", vocab_size=len(tok), head_dim=32, hidden_size=128, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024)
    tiny_dir = tmp / "tiny-qwen3"
    tiny.save_pretrained(tiny_dir)
    tok.save_pretrained(tiny_dir)
    ids = offline_token_ids(tok, 400, "gpl3").view(-1).tolist()
    prompts = [ids[:150], ids[160:257], ids[300:361]]           # longer than W, odd lengths, one batch
    chat = tok.apply_chat_template([{"role": "user", "content": CHAT}], add_generation_prompt=True, tokenize=False)
    prompts.append(tok(chat, add_special_tokens=False)["input_ids"])  # what the server renders for CHAT
    native = make_model("mistral", vocab_size=len(tok), head_dim=32, hidden_size=128, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=1024, sliding_window=NATIVE_W)
    native.save_pretrained(tmp / "tiny-mistral-native")
    tok.save_pretrained(tmp / "tiny-mistral-native")
    models = {"default": (str(default_model_path()), default), "tiny_qwen3": (str(tiny_dir), tiny)}
    traced = {("default", "full"), ("default", "swa_sinks"), ("tiny_qwen3", "swa_layers"), ("tiny_qwen3", "combined")}
    runs = [{"name": f"{m}/{c}", "model": path, "swaa_config": None if cfg is None else cfg.to_dict(),
             "trace": (m, c) in traced}
            for m, (path, _) in models.items() for c, cfg in CONFIGS.items()]
    mistral = str(tmp / "tiny-mistral-native")
    runs += [{"name": "native/swa_sinks", "model": mistral,                                 # its window turned off
              "swaa_config": CONFIGS["swa_sinks"].to_dict(), "hf_overrides": {"sliding_window": None}},
             {"name": "native/vllm_window", "model": mistral, "swaa_config": None},        # vLLM's own window
             {"name": "native/swaa_window", "model": mistral, "hf_overrides": {"sliding_window": None},
              "swaa_config": SWAAConfig(sliding_window_size=NATIVE_W).to_dict()}]
    job = {"runs": runs, "prompts": prompts, "max_tokens": MAX_TOKENS, "max_model_len": 1024, "block_size": BS,
           "max_num_batched_tokens": 64, "trace_prompt": ids[:400], "trace_tokens": 24}
    (tmp / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(HERE.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(HERE / "vllm_job.py"), str(tmp / "job.json"), str(tmp / "out.json")],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"results": json.loads((tmp / "out.json").read_text()), "prompts": prompts, "tok": tok,
            "models": {**{m: hf for m, (_, hf) in models.items()}, "native": native}}


def _hf(model, cfg, ids):
    apply_swaa(model, cfg if cfg is not None else SWAAConfig(), replace_native_window=True)
    model.generation_config.eos_token_id = None
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits.float(), -1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0]
        gen = model.generate(x, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=0)[0, len(ids):]
    return gen.tolist(), lp


@pytest.mark.parametrize("model_name, config", [(m, c) for m in ("default", "tiny_qwen3") for c in CONFIGS]
                         + [("native", "swa_sinks")])
def test_vllm_matches_hf(setup, model_name, config):
    """The "native" model is a Mistral-style model with its own window, turned off by the overrides that the plugin
    names when it refuses such a model, against HF with replace_native_window=True."""
    res = setup["results"][f"{model_name}/{config}"]
    for p, ids in enumerate(setup["prompts"]):
        tokens, lp = _hf(setup["models"][model_name], CONFIGS[config], ids)
        for run in ("first", "again"):                           # "again": served from the prefix cache
            got = res[run][p]
            assert got["tokens"] == tokens, f"{run} prompt {p}: vLLM {got['tokens']} vs HF {tokens}"
            diff = (torch.tensor(got["prompt_logprobs"]) - lp).abs().max().item()
            assert diff <= 1e-3, f"{run} prompt {p}: prompt logprob differs by {diff:.2e}"


@pytest.mark.parametrize("model_name", ["default", "tiny_qwen3"])
def test_swaa_changes_what_vllm_computes(setup, model_name):
    full = setup["results"][f"{model_name}/full"]["first"][0]
    for config in CONFIGS:
        if config != "full":
            lp = setup["results"][f"{model_name}/{config}"]["first"][0]["prompt_logprobs"]
            assert max(abs(a - b) for a, b in zip(lp, full["prompt_logprobs"])) > 1e-2, config


def test_swaa_without_sinks_matches_vllms_own_sliding_window(setup):
    """A Mistral-style model with its own window W run by vLLM natively, and the same weights with the window off and
    SWAA W, S=0: the same rule, so the same tokens and prompt log-probabilities (fp32)."""
    native, swaa = setup["results"]["native/vllm_window"], setup["results"]["native/swaa_window"]
    for run in ("first", "again"):
        for a, b in zip(native[run], swaa[run]):
            assert a["tokens"] == b["tokens"]
            assert max(abs(x - y) for x, y in zip(a["prompt_logprobs"], b["prompt_logprobs"])) <= 1e-4


def _per_kind(step):
    """Blocks held by the traced request in one step, per kind of KV-cache group: {kind: (groups, layers, blocks)}."""
    kinds = {}
    for g in step:
        n, layers, blocks = kinds.get(g["kind"], (0, 0, 0))
        kinds[g["kind"]] = (n + 1, layers + g["layers"], blocks + g["blocks"])
    return kinds


WINDOW_BLOCKS = -(-S // BS) + -(-(W - 1) // BS) + 2               # sink blocks + window + the block written


def test_kv_blocks_bounded_by_sinks_and_window(setup):
    full = [_per_kind(s) for s in setup["results"]["default/full"]["kv_blocks"]]
    swa = [_per_kind(s) for s in setup["results"]["default/swa_sinks"]["kv_blocks"]]
    n_prompt, n_new = 400, 24
    assert set(full[0]) == {"FullAttentionSpec"} and set(swa[0]) == {"SinkWindowSpec"}     # one group each
    held_full = [s["FullAttentionSpec"][2] for s in full[:-1]]
    held_swa = [s["SinkWindowSpec"][2] for s in swa[:-1]]
    assert max(held_full) == -(-(n_prompt + n_new - 1) // BS)        # full attention keeps every block
    assert max(held_swa[1:]) <= WINDOW_BLOCKS < max(held_full), (held_swa, held_full)   # after the first steps


@pytest.mark.parametrize("config", ["swa_layers", "combined"])
def test_windowed_layers_free_blocks_whatever_the_other_layers_do(setup, config):
    """Half the layers full (swa_layers), or FA decode and a full layer beside windowed ones (combined): the windowed
    layers' groups hold sinks + window, the full and FA-decode layers' groups hold every block."""
    trace = [_per_kind(s) for s in setup["results"][f"tiny_qwen3/{config}"]["kv_blocks"][:-1]]
    n_prompt, n_new = 400, 24
    windowed = {"swa_layers": 2, "combined": 1}[config]
    groups, layers, _ = trace[0]["SinkWindowSpec"]
    assert layers == windowed and trace[0]["FullAttentionSpec"][1] == 4 - windowed
    every = -(-(n_prompt + n_new - 1) // BS)
    assert max(s["FullAttentionSpec"][2] / s["FullAttentionSpec"][0] for s in trace) == every
    assert max(s["SinkWindowSpec"][2] / groups for s in trace[1:]) <= WINDOW_BLOCKS < every


def _post(url, body, timeout=300):
    import urllib.request
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def test_swaa_serve_answers_like_offline_vllm(setup, tmp_path):
    """A real OpenAI-compatible server started by `swaa serve` with SWAA options; its completions and chat
    completions equal offline vLLM under the same config and differ from full attention. Without --host it listens
    on this machine only."""
    import time
    import urllib.request
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(HERE.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "swaa.cli", "serve", "default", "--sliding-window-size", str(W), "--keep-first",
         str(S), "--port", str(port), "--dtype", "float32", "--enforce-eager", "--seed", "0",
         "--max-model-len", "1024", "--block-size", str(BS), "--max-num-batched-tokens", "64"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "server did not come up in 600 s"
            time.sleep(2)
        assert listening_addresses(port) == {"127.0.0.1"}                    # not every interface, vLLM's default
        with urllib.request.urlopen(base + "/v1/models", timeout=30) as r:
            model = json.loads(r.read())["data"][0]["id"]
        tok = setup["tok"]
        offline = setup["results"]["default/swa_sinks"]["first"]
        full = setup["results"]["default/full"]["first"]
        comp = _post(base + "/v1/completions", {"model": model, "prompt": setup["prompts"][0],
                                                "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True})
        assert comp["choices"][0]["text"] == tok.decode(offline[0]["tokens"])
        assert comp["choices"][0]["text"] != tok.decode(full[0]["tokens"])      # SWAA is active in the server
        chat = _post(base + "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": CHAT}],
                                                     "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True})
        content = chat["choices"][0]["message"]["content"]
        assert content == tok.decode(offline[3]["tokens"], skip_special_tokens=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
