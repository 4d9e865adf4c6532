"""The speed study's code on CPU: benchmarks/e2e.py on a toy MoE shape (JSON schema, resume) and the default model's
timing rows (cache bytes bounded by sinks + window, growing under full attention / FA decode). Never asserts time."""
import importlib.util
import json
from pathlib import Path

import pytest

from swaa import SWAAConfig, load_model
from swaa.speed.costmodel import ModelShape
from swaa.speed.measure import run_speed_grid

ROOT = Path(__file__).resolve().parents[2]


def _e2e():
    spec = importlib.util.spec_from_file_location("e2e", ROOT / "benchmarks" / "e2e.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_e2e_script_on_cpu_writes_json_as_it_goes_and_resumes(tmp_path, capsys):
    e2e = _e2e()
    args = ["--device", "cpu", "--out", str(tmp_path), "--quick", "--models", "tiny-moe", "--decode-steps", "2"]
    assert e2e.main(args) == 0
    res = json.loads((tmp_path / "e2e_cpu.json").read_text())
    for k in ("device", "torch", "triton", "transformers", "python", "rates", "rows", "plan", "decode_steps"):
        assert k in res, k
    assert set(res["rates"]) == {"tiny-moe"}
    rates = res["rates"]["tiny-moe"]
    assert {"matmul_tflops", "bandwidth_gbps", "attention", "linear_s_per_token", "decode_overhead_s"} <= set(rates)
    assert {(a["window"], a["keep_first"]) for a in rates["attention"]} == {(None, 0), (16, 4)}
    rows = res["rows"]
    assert [r["mark"] for r in rows] == ["full", "swa=16_sink=4_fadec", "swa=16_sink=4_falayer=1_from1_fadec"]
    for r in rows:
        assert r["model"] == "tiny-moe" and r["n"] == 64 and r["decode_steps"] == 2 and r["reps"] == 1
        assert len(r["prefill_all_s"]) == 1 and r["prefill_s"] > 0 and r["decode_tok_s"] > 0
        assert r["kv_bytes_decode"] == r["kv_bytes_decode_pred"] and "err_prefill" in r and "err_decode" in r
    lines = (tmp_path / "e2e_cpu.rows.jsonl").read_text().splitlines()
    assert len(lines) == 4                                                  # rates + 3 rows
    capsys.readouterr()
    assert e2e.main(args) == 0                                               # a rerun: nothing to do
    assert "every row done already" in capsys.readouterr().out
    assert (tmp_path / "e2e_cpu.rows.jsonl").read_text().splitlines() == lines
    with pytest.raises(ValueError, match="unknown model shape 'nope'"):
        e2e.main(["--device", "cpu", "--out", str(tmp_path), "--models", "nope"])


def test_default_model_rows_kv_bounded_by_window_growing_for_full(tmp_path):
    model, _ = load_model()
    w, s = 16, 2
    full, swa = SWAAConfig(), SWAAConfig(sliding_window_size=w, keep_first=s)
    fadec = SWAAConfig(sliding_window_size=w, keep_first=s, force_fa_decode=True)
    kw = dict(reps=1, decode_steps=1, warmup_n=None, progress=False)
    rows = run_speed_grid(model, [full, swa, fadec], [40], tmp_path / "r.jsonl", **kw)
    rows += run_speed_grid(model, [full, swa], [64], tmp_path / "r.jsonl", **kw)
    shape = ModelShape.from_config(model.config)
    slot = 2 * shape.kv_heads * shape.head_dim * 4 * shape.layers             # one token, all layers, fp32
    by = {(r["n"], r["mark"]): r["kv_bytes_decode"] for r in rows}
    assert by[40, "full"] == by[40, "swa=16_sink=2_fadec"] == (40 + 3) * slot        # prompt + 3 decode steps
    assert by[64, "full"] == (64 + 3) * slot
    assert by[40, "swa=16_sink=2"] == by[64, "swa=16_sink=2"] == (s + w - 1) * slot   # sinks + window, flat
    assert all(r["kv_bytes_decode"] == r["kv_bytes_decode_pred"] for r in rows)
    assert {r["model"] for r in rows} == {"default"} and all(r["decode_steps"] == 1 for r in rows)
