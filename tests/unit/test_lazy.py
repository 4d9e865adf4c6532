"""LightTransfer lazy ratios on a tiny random-weight model: LSE ratios equal dense softmax mass, selection is
deterministic, the config applies, and short samples are skipped (counted) or refused with a clear error."""
import math

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from swaa import SWAAConfig, apply_swaa
from swaa.analysis.attention_maps import capture_qk
from swaa.analysis.lighttransfer import interleaved_layers, lazy_config, lazy_layer_freqs, lazy_ratio, sample_lazy_ratios
from swaa.models import default_model_path
from tests.integration.tiny_models import make_model, with_independent

P = dict(w_sink=2, w_recent=8, w_last=6)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def tiny(tok):
    return make_model("qwen3", vocab_size=len(tok))          # 4 layers, 4 query / 2 KV heads (GQA 2)


def _dataset(lengths):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    return pd.DataFrame([dict(id=f"s{i}", prompt=" ".join(words[(i + j) % 10] for j in range(n)), question="q",
                              answer=f"{i} {words[i % 10]}") for i, n in enumerate(lengths)])


def _dense_ratio(q, k, scale, w_sink, w_recent, w_last):
    """Plain softmax over the full causal (L, L) scores; mass on kept keys, by explicit loops."""
    lq, lk = q.shape[2], k.shape[2]
    k = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.double() @ k.transpose(-1, -2)) * scale
    causal = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    probs = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
    kept = torch.zeros(lq, lk, dtype=torch.bool)
    for t in range(lq):
        i = t + lk - lq
        for j in range(i + 1):
            kept[t, j] = i - j <= w_recent - 1 or j <= w_sink - 1
    return (probs * kept)[:, :, -w_last:].sum(-1).mean(-1)          # (B, Hq)


def test_lse_ratio_equals_dense_softmax_every_layer_and_head(tiny):
    ids = torch.randint(3, 500, (1, 41))
    apply_swaa(tiny, SWAAConfig())
    with torch.no_grad(), capture_qk() as recs:
        tiny(ids, use_cache=False)
    assert len(recs) == 4
    got = sample_lazy_ratios(tiny, ids, **P)                          # (layers, Hq)
    assert got.shape == (4, 4)
    for r in recs:
        dense = _dense_ratio(r["q"], r["k"], r["scale"], **P)[0]
        for chunk in (7, 4096):                                       # chunked over keys or in one piece
            lse = lazy_ratio(r["q"], r["k"], scale=r["scale"], chunk=chunk, **P)[0]
            torch.testing.assert_close(lse.double(), dense, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[r["layer"]].double(), dense, atol=1e-5, rtol=1e-5)
    assert (got < 0.95).any() and (got > 0).all()                    # not trivially 1: keys outside are seen


def test_gqa_heads_map_to_their_kv_head():
    q, k = torch.randn(2, 6, 30, 8), torch.randn(2, 2, 30, 8)
    k[:, 1] *= 4                                                      # make the two KV heads clearly different
    got = lazy_ratio(q, k, w_sink=3, w_recent=5, w_last=4, chunk=9)
    torch.testing.assert_close(got.double(), _dense_ratio(q, k, 1 / math.sqrt(8), 3, 5, 4), atol=1e-5, rtol=1e-5)
    # queries aligned to the end of the keys: the last 10 queries give the same ratio as all of them
    torch.testing.assert_close(lazy_ratio(q[:, :, -10:], k, w_sink=3, w_recent=5, w_last=4), got)


def test_selection_is_deterministic_and_the_config_applies(tiny, tok):
    data = _dataset([60, 70, 80, 90, 100])
    a = lazy_layer_freqs(tiny, tok, data, top_p=0.5, progress=False, model_name="tiny", **P)
    b = lazy_layer_freqs(tiny, tok, data, top_p=0.5, progress=False, model_name="tiny", **P)
    assert a == b and a["n_used"] == 5 and a["n_skipped"] == 0
    assert sum(a["count"].values()) == 5 * 2                          # 2 of 4 layers voted lazy per sample
    cfg, cfg2 = lazy_config(a, 0.5), lazy_config(b, 0.5)
    assert cfg == cfg2 and len(cfg.non_sliding_layers) == 2
    assert (cfg.sliding_window_size, cfg.keep_first) == (8, 2)      # window and sinks the ratios measured
    lazy = sorted(set(range(4)) - set(cfg.non_sliding_layers))
    assert min(a["freq"][str(n)] for n in lazy) >= max(a["freq"][str(n)] for n in cfg.non_sliding_layers)
    # the config applies: a forward under it equals the independent dense attention under the same config
    ids = torch.randint(3, 500, (1, 50))
    with torch.no_grad():
        out = apply_swaa(tiny, cfg)(ids, use_cache=False).logits
        full = apply_swaa(tiny, SWAAConfig())(ids, use_cache=False).logits
        ref = with_independent(tiny, cfg)(ids, use_cache=False).logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert (out - full).abs().max() > 1e-3                            # the lazy layers really slide


def test_ties_break_by_mean_ratio_then_layer_index():
    base = SWAAConfig(sliding_window_size=16, keep_first=1)
    assert lazy_config({0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}, 0.5, base).non_sliding_layers == [2, 3]
    assert lazy_config({"0": 0.2, "1": 0.9, "2": 0.2, "3": 0.2}, 0.5, base).non_sliding_layers == [2, 3]
    full = dict(freq={"0": 1.0, "1": 0.5, "2": 0.5, "3": 0.0}, mean_lazy_ratio={"0": .9, "1": .2, "2": .6, "3": .1},
                params=dict(w_sink=4, w_recent=64))
    cfg = lazy_config(full, 0.5)
    assert cfg.non_sliding_layers == [1, 3] and cfg.mark == "swa=64_sink=4_falayer=2_from1"
    assert lazy_config(full, 0.0).non_sliding_layers == [0, 1, 2, 3]
    assert lazy_config(full, 1.0, base).non_sliding_layers == []
    with pytest.raises(ValueError, match="ratio=1.5"):
        lazy_config(full, 1.5)
    with pytest.raises(ValueError, match="needs base="):
        lazy_config({0: 1.0, 1: 0.0}, 0.5)
    with pytest.raises(ValueError, match="full attention"):
        lazy_config(full, 0.5, SWAAConfig())
    with pytest.raises(ValueError, match=r"layers 0\.\.2"):
        lazy_config({0: 1.0, 1: 0.0, 3: 0.5}, 0.5, base)
    assert interleaved_layers(30, 15) == SWAAConfig(non_sliding_layers="SF" * 15).non_sliding_layers
    assert interleaved_layers(30, 8) == [2, 6, 10, 14, 17, 21, 25, 29] and interleaved_layers(4, 0) == []


def test_short_samples_are_skipped_and_counted_all_short_is_an_error(tiny, tok, tmp_path):
    data = _dataset([3, 60, 4, 80])                                  # the chat template adds ~30 tokens
    with pytest.warns(UserWarning, match="2 of 4 samples are shorter than 46 tokens"):
        res = lazy_layer_freqs(tiny, tok, data, progress=False, rows_path=tmp_path / "rows.jsonl",
                               out=tmp_path / "tiny_lazy_layers_freq.json", w_sink=2, w_recent=30, w_last=14)
    assert (res["n_used"], res["n_skipped"]) == (2, 2)
    assert [s["id"] for s in res["skipped"]] == ["s0", "s2"] and all(s["length"] < 46 for s in res["skipped"])
    assert (tmp_path / "tiny_lazy_layers_freq.json").exists()
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2
    with pytest.warns(UserWarning):                                   # a rerun reuses the rows: same result
        again = lazy_layer_freqs(tiny, tok, data, progress=False, rows_path=tmp_path / "rows.jsonl",
                                 w_sink=2, w_recent=30, w_last=14)
    assert again["freq"] == res["freq"] and len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match=r"all 2 samples are shorter than .* = 2 \+ 300 \+ 14 = 316 tokens "
                                         r"\(lengths \d+\.\.\d+\); use longer prompts"):
        lazy_layer_freqs(tiny, tok, _dataset([3, 60]), progress=False, w_sink=2, w_recent=300, w_last=14)
