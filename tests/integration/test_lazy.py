"""LightTransfer on the default model: LSE lazy ratios equal the dense softmax mass for all 30 layers x 9 heads,
and `swaa lazy` writes frequencies and a config that applies."""
import json

import pytest
import torch

from swaa import SWAAConfig, apply_swaa, load_model
from swaa.analysis.attention_maps import capture_qk, layer_attention
from swaa.attention.masks import dense_mask
from swaa.cli import main
from swaa.evaluation.data import offline_token_ids
from swaa.analysis.lighttransfer import lazy_ratio, sample_lazy_ratios


@pytest.fixture(scope="module")
def default():
    return load_model()


def test_default_model_lazy_ratios_equal_dense_softmax(default):
    model, tok = default
    ids = offline_token_ids(tok, 150)
    ratios = sample_lazy_ratios(model, ids, w_sink=4, w_recent=32, w_last=16)       # (30, 9)
    assert ratios.shape == (30, 9)
    apply_swaa(model, SWAAConfig())
    with torch.no_grad(), capture_qk() as recs:
        model(ids, use_cache=False)
    kept = dense_mask(150, 150, 32, 4)[0, 0, -16:]                                      # the SWAA rule W=32, S=4
    for r in recs:
        probs = layer_attention(r)[0, :, -16:]                                      # (9, 16, 150) full causal
        dense = (probs * kept).sum(-1).mean(-1)
        torch.testing.assert_close(ratios[r["layer"]], dense, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(lazy_ratio(r["q"], r["k"], w_sink=4, w_recent=32, w_last=16, scale=r["scale"],
                                              chunk=37)[0], dense, atol=1e-5, rtol=1e-4)
    assert ratios.min() < 0.5 < ratios.max()                 # some heads look far back, others stay local


def test_cli_lazy_writes_frequencies_and_a_config_that_applies(default, tmp_path, capsys):
    args = ["lazy", "--dataset", "synthetic:160:1", "--out", str(tmp_path), "--w-recent", "32", "--w-last", "8",
            "--ratio", "0.5", "--n", "3"]
    assert main(args) == 0
    res = json.loads((tmp_path / "default_lazy_layers_freq.json").read_text())
    assert res["num_layers"] == 30 and res["num_heads"] == 9 and res["n_used"] == 3 and res["n_skipped"] == 0
    assert sum(res["count"].values()) == 3 * 15 and set(res["freq"]) == {str(n) for n in range(30)}
    lazy_cfg, inter = [SWAAConfig.from_dict(e["swaa_config"]) for e in
                       json.loads((tmp_path / "default_lazy_config.json").read_text())]
    assert len(lazy_cfg.non_sliding_layers) == len(inter.non_sliding_layers) == 15
    assert (lazy_cfg.sliding_window_size, lazy_cfg.keep_first) == (32, 4)
    assert "lazy config (50% of 30 layers sliding)" in capsys.readouterr().out
    assert len((tmp_path / "default_lazy_rows.jsonl").read_text().splitlines()) == 3     # resumable rows
    model, tok = default
    with torch.no_grad():
        logits = apply_swaa(model, lazy_cfg)(offline_token_ids(tok, 80), use_cache=False).logits
    assert torch.isfinite(logits).all()
