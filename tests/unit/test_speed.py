"""Speed study accounting on CPU: FLOP and KV-byte counts of the cost model, the timing rows of a tiny model (their
schema and measured cache bytes against the prediction), resume, the Pareto front and `swaa advise`. Never time."""
import json
from pathlib import Path

import pytest
import torch

from swaa import SWAAConfig
from swaa.attention.masks import dense_mask, visible_pairs
from swaa.speed.costmodel import (SHAPES, ModelShape, Rates, decode_cost, get_shape, layer_costs, load_rates,
                            predict_decode, predict_prefill, prefill_cost)
from swaa.speed.measure import build_random_model, random_prompt_ids, run_speed_grid, speed_settings, time_setting
from swaa.speed.tradeoff import advise, load_speed, pareto_front, predicted_rows, tradeoff_table

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# 2 layers, hidden 8, 2 query / 1 KV heads of 4, MLP 16, vocab 10: every count below is done by hand
HAND = ModelShape("hand", "llama", 2, 8, 2, 1, 4, 16, 10)


def test_prefill_flops_match_hand_counts_and_visible_pairs():
    cfg = SWAAConfig(sliding_window_size=3, keep_first=1, non_sliding_layers=[1])
    rows = layer_costs(HAND, cfg, 6)
    # the W=3, S=1 picture of masks.py: rows see 1, 2, 3, 4, 4, 4 keys = 18 pairs; the full layer 1+..+6 = 21
    assert [r["pairs"] for r in rows] == [18, 21]
    assert rows[0]["pairs"] == int(dense_mask(6, 6, 3, 1).sum()) == visible_pairs(6, 6, 3, 1)
    assert [r["attn_flops"] for r in rows] == [4 * 4 * 2 * 18, 4 * 4 * 2 * 21]
    # q 8x8, k 8x4, v 8x4, o 8x8 = 192 weights; MLP 3 x 8 x 16 = 384; 2 FLOPs per weight per token
    assert HAND.attn_params == 192 and HAND.mlp_params_active == 384
    assert all(r["linear_flops"] == 2 * 6 * (192 + 384) for r in rows)
    tot = prefill_cost(HAND, cfg, 6)
    assert tot["flops"] == 2 * 2 * 6 * 576 + 32 * (18 + 21) + 2 * 8 * 10      # + one logit row
    assert HAND.params == 2 * 576 + 2 * 10 * 8                                   # untied embeddings and head


def test_moe_counts_only_active_experts_and_real_shapes_have_their_sizes():
    moe = get_shape("qwen3-30b-a3b")
    assert moe.mlp_params_active == 2048 * 128 + 8 * 3 * 2048 * 768
    assert round(moe.params / 1e9, 1) == 30.5 and round(get_shape("qwen3-4b").params / 1e9, 2) == 4.02
    assert round(get_shape("llama-3.1-8b").params / 1e9, 2) == 8.03
    with pytest.raises(ValueError, match="unknown model shape 'qwen9'.*known"):
        get_shape("qwen9")


def test_decode_kv_bytes_bounded_by_sinks_and_window_and_growing_otherwise():
    w, s, slot = 3, 2, 2 * 1 * 4 * 2                          # K+V x 1 KV head x head_dim 4 x bf16
    swa = SWAAConfig(sliding_window_size=w, keep_first=s)
    fadec = SWAAConfig(sliding_window_size=w, keep_first=s, force_fa_decode=True)
    for n in (10, 100, 1000):
        c = decode_cost(HAND, swa, n)
        assert c["kv_stored_bytes"] == 2 * (s + w - 1) * slot          # both layers evict: flat
        assert c["kv_read_bytes"] == 2 * (s + w) * slot                # the new token sees S sinks + W keys
        assert decode_cost(HAND, None, n)["kv_stored_bytes"] == 2 * (n + 1) * slot
        assert decode_cost(HAND, fadec, n)["kv_read_bytes"] == 2 * (n + 1) * slot
        assert decode_cost(HAND, swa, n, kv_eviction=False)["kv_stored_bytes"] == 2 * (n + 1) * slot
    assert decode_cost(HAND, swa, 2)["kv_stored_bytes"] == 2 * 3 * slot          # short cache: all of it


def _rates():
    return Rates("test", matmul_tflops=1.0, bandwidth_gbps=1.0, linear_s_per_token=1e-3,
                 attention=[dict(n=64, window=None, keep_first=0, tflops=1.0),
                            dict(n=64, window=8, keep_first=0, tflops=0.5)],
                 decode_overhead_s={"keep": 1e-3, "evict": 2e-3})


def test_predictions_add_up_from_rates():
    r = _rates()
    cfg = SWAAConfig(sliding_window_size=8, non_sliding_layers=[1])
    p = predict_prefill(HAND, cfg, 64, r)
    attn = 4 * 4 * 2 * (visible_pairs(64, 64, 8) / 0.5e12 + visible_pairs(64, 64, None) / 1e12)
    assert p["attention_s"] == pytest.approx(attn) and p["linear_s"] == pytest.approx(0.064)
    d = predict_decode(HAND, cfg, 64, r)
    moved = 2 * 576 * 2 + 10 * 8 * 2 + (8 + 65) * 16 + 2 * (7 + 65) * 16      # weights, head, keys read, cat copy
    assert d["bytes"] == moved and d["seconds"] == pytest.approx(3e-3 + moved / 1e9)
    r.overlap = True                                   # CUDA: host work and device bytes overlap
    assert predict_decode(HAND, cfg, 64, r)["seconds"] == pytest.approx(max(3e-3, moved / 1e9))
    r.bandwidth_gbps = 1e-6
    assert predict_decode(HAND, cfg, 64, r)["seconds"] == pytest.approx(moved / 1e3)
    with pytest.raises(ValueError, match="no attention rate measured for windowed"):
        Rates("x", 1, 1, attention=[dict(n=8, window=None, keep_first=0, tflops=1)]).attention_tflops(8, 4)


def test_h200_rates_from_the_attention_benchmark_reproduce_the_anchor():
    r = load_rates(RESULTS / "attention_gpu_h200.json", get_shape("qwen3-4b"))
    assert predict_prefill(get_shape("qwen3-4b"), None, 32768, r)["seconds"] == pytest.approx(1.133, rel=0.05)


def test_speed_settings_are_the_papers_grid():
    marks = [c.mark for c in speed_settings(36)]
    assert marks == ["full", "swa=2k_sink=0", "swa=4k_sink=0", "swa=2k_sink=100", "swa=2k_sink=100_fadec",
                     "swa=2k_sink=100_falayer=18_from1_step2_fadec", "swa=2k_sink=100_falayer=9_from3_step4_fadec"]
    assert len(speed_settings(32, reduced=True)) == 3
    with pytest.raises(ValueError, match="windows=\\(\\)"):
        speed_settings(4, windows=())


@pytest.fixture(scope="module")
def tiny():
    return build_random_model(SHAPES["tiny-qwen3"])


@pytest.mark.parametrize("cfg", [SWAAConfig(), SWAAConfig(sliding_window_size=8, keep_first=2),
                                 SWAAConfig(sliding_window_size=8, keep_first=2, force_fa_decode=True),
                                 SWAAConfig(sliding_window_size=8, keep_first=2, non_sliding_layers=[1, 3])])
def test_timing_row_schema_and_measured_kv_bytes_equal_the_prediction(tiny, cfg):
    shape = SHAPES["tiny-qwen3"]
    row = time_setting(tiny, shape, cfg, random_prompt_ids(40, shape.vocab, "cpu"), reps=1, decode_steps=3,
                       warmup_n=16, rates=_rates())
    for k in ("n", "mark", "swaa_config", "prefill_s", "prefill_all_s", "decode_step_ms", "decode_tok_s",
              "peak_mem_bytes", "kv_bytes_prefill", "kv_bytes_decode", "kv_bytes_decode_pred", "pred_prefill_s",
              "pred_decode_step_ms", "err_prefill", "err_decode", "flops_prefill", "attention_kept"):
        assert k in row, k
    json.dumps(row)
    assert row["mark"] == cfg.mark and row["tokens_seen"] == 40 + 2 + 3
    assert row["kv_bytes_decode"] == row["kv_bytes_decode_pred"]              # what the cache really holds
    slot = 2 * shape.kv_heads * shape.head_dim * 4                            # fp32 on CPU
    if cfg.sliding_window_size and not cfg.force_fa_decode:
        evicting = shape.layers - len(cfg.non_sliding_layers)
        assert row["kv_bytes_decode"] == slot * (evicting * (2 + 8 - 1) + (shape.layers - evicting) * 45)
    else:
        assert row["kv_bytes_decode"] == slot * shape.layers * 45
    assert row["kv_bytes_prefill"] == prefill_cost(shape, cfg, 40, bytes_per=4)["kv_bytes"]


def test_grid_resumes_without_recomputing(tiny, tmp_path, monkeypatch):
    import swaa.speed.measure as sp
    settings = [SWAAConfig(), SWAAConfig(sliding_window_size=8, keep_first=2)]
    rows = run_speed_grid(tiny, settings, [24], tmp_path / "s.jsonl", reps=1, decode_steps=1, progress=False)
    assert [r["mark"] for r in rows] == ["full", "swa=8_sink=2"] and all(r["kind"] == "row" for r in rows)
    monkeypatch.setattr(sp, "time_setting", lambda *a, **k: pytest.fail("a finished row was computed again"))
    again = run_speed_grid(tiny, settings, [24], tmp_path / "s.jsonl", reps=1, decode_steps=1, progress=False)
    assert again == rows
    with pytest.raises(ValueError, match="lengths=\\[1\\]"):
        run_speed_grid(tiny, settings, [1], tmp_path / "t.jsonl")


# a hand-made table: full 10 s / NLL 1.0; A 5 s / 1.05; B 4 s / 1.5; C 6 s / 1.2 (dominated by A); D 3 s / 3.0
SPEED = [dict(mark=m, n=1000, model="m", prefill_s=t, decode_step_ms=1.0) for m, t in
         (("full", 10.0), ("A", 5.0), ("B", 4.0), ("C", 6.0), ("D", 3.0))]
EVAL = [dict(mark=m, answer_nll_mean=v, contains=c) for m, v, c in
        (("full", 1.0, 0.9), ("A", 1.05, 0.85), ("B", 1.5, 0.5), ("C", 1.2, 0.9), ("D", 3.0, 0.1))]


def test_pareto_front_and_advice_on_a_hand_made_table():
    pts = tradeoff_table(EVAL, SPEED)
    assert {p["mark"]: p["pareto"] for p in pts} == dict(full=True, A=True, B=True, C=False, D=True)
    assert {p["mark"]: p["speedup"] for p in pts}["A"] == 2.0
    assert [p["mark"] for p in advise(pts, min_speedup=1.5)] == ["A", "B", "D"]     # most accurate first
    assert [p["mark"] for p in advise(pts, max_loss=0.1)] == ["A", "full"]          # fastest first
    assert [p["mark"] for p in advise(pts, max_loss=0.6)][0] == "B"
    assert advise(pts, min_speedup=5) == []
    # higher-is-better metric: C (0.9 in 6 s) is now on the front, the same accuracy as full and faster
    acc = tradeoff_table(EVAL, SPEED, metric="contains")
    assert {p["mark"]: p["pareto"] for p in acc} == dict(full=False, A=True, B=True, C=True, D=True)
    assert pareto_front([dict(seconds=1, answer_nll_mean=1), dict(seconds=1, answer_nll_mean=1)]) == [True, True]
    with pytest.raises(ValueError, match="min_speedup=0"):
        advise(pts, min_speedup=0)
    with pytest.raises(ValueError, match="no 'full' setting"):
        tradeoff_table(EVAL, SPEED[1:])
    with pytest.raises(ValueError, match="metric='bleu'"):
        tradeoff_table(EVAL, SPEED, metric="bleu")


def test_swaa_advise_cli_on_files(tmp_path, capsys):
    from swaa.cli import main
    (tmp_path / "e.csv").write_text("mark,n,contains,answer_nll_mean\n" + "".join(
        f"{e['mark']},10,{e['contains']},{e['answer_nll_mean']}\n" for e in EVAL))
    (tmp_path / "s.json").write_text(json.dumps(dict(benchmark="e2e", rows=[dict(r, kind="row") for r in SPEED]
                                                     + [dict(SPEED[0], n=2000, kind="row")])))
    args = ["advise", "--speed", str(tmp_path / "s.json"), "--eval", str(tmp_path / "e.csv"), "--length", "1000"]
    assert main(args + ["--min-speedup", "1.5"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "best: A, B, D"
    assert main(args + ["--max-nll-increase", "0.1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "best: A, full"
    assert main(args + ["--min-speedup", "9"]) == 1
    with pytest.raises(ValueError, match="several \\(model, length\\) pairs.*--length"):
        load_speed(tmp_path / "s.json")
    assert main(["advise", "--shape", "qwen3-4b", "--length", "131072", "--min-speedup", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "best: swa=2k_sink=100_falayer=18_from1_step2_fadec" in out      # keeps the most attention at >= 1.5x


def test_predicted_rows_keep_less_attention_with_smaller_windows():
    rows = predicted_rows(get_shape("qwen3-4b"), speed_settings(36), 131072, _rates())
    kept = {r["mark"]: r["attention_kept"] for r in rows}
    assert kept["full"] == 1.0 and kept["swa=2k_sink=0"] < kept["swa=4k_sink=0"] < kept[
        "swa=2k_sink=100_falayer=18_from1_step2_fadec"] < 1.0


def test_packaged_rates_are_the_committed_h200_measurements():
    """`swaa advise --shape` reads rates shipped inside the package (so an installed wheel has them): they are
    benchmarks/results/e2e_gpu_h200.json's, for every named shape."""
    import json
    from pathlib import Path

    from swaa.speed.costmodel import SHAPES, load_rates, packaged_rates_path
    packaged = json.loads(packaged_rates_path().read_text())
    results = json.loads((Path(__file__).resolve().parents[2] / "benchmarks/results/e2e_gpu_h200.json").read_text())
    assert packaged["rates"] == results["rates"] and packaged["device"] == results["device"]
    assert {"qwen3-4b", "llama-3.1-8b", "qwen3-30b-a3b"} <= set(packaged["rates"])
    for name in packaged["rates"]:
        assert load_rates(packaged_rates_path(), SHAPES[name]).device == results["device"], name
