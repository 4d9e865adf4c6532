"""The benchmarks' released files through `swaa eval` on the default model (fixtures in each schema), and the
needle-in-a-haystack grid: the needle at its depth, scored by answer NLL, resumable, summarised with intervals."""
import json
from pathlib import Path

import pandas as pd
import pytest

from swaa import SWAAConfig
from swaa.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def model():
    from swaa import load_model
    return load_model()


@pytest.mark.slow
def test_released_files_run_through_swaa_eval(tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps([{"swaa_config": {"sliding_window_size": 64, "keep_first": 4}}]))
    for name in ("longbench_v2.json", "longmemeval_s.json"):
        out = tmp_path / name.split(".")[0]
        assert main(["eval", "--dataset", str(FIXTURES / name), "--settings", str(settings), "--out", str(out),
                     "--max-new-tokens", "8", "--batch-size", "3"]) == 0
        (summary,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        rows = pd.read_parquet(out / summary["parquet"]).set_index("id")
        items = json.loads((FIXTURES / name).read_text())
        assert summary["n"] == len(items) == len(rows)
        if name.startswith("longbench"):
            assert set(summary["by_task"]) == {x["domain"] for x in items}
            for x in items:                                  # scored by the letter, the choices kept in the row
                row = rows.loc[x["_id"]]
                assert list(row["choices"]) == [x[f"choice_{c}"] for c in "ABCD"]
                assert row["answer"] == x["answer"] and row["difficulty"] == x["difficulty"]
                assert row["exact_match"] == float(row["choice"] == x["answer"])
        else:                                                # per question type
            assert set(summary["by_task"]) == {x["question_type"] for x in items}
            assert rows.loc["gpt4_2655b836", "question_type"] == "temporal-reasoning"
            assert rows.loc["gpt4_2655b836", "answer"] == "12"
        for cell in summary["by_task"].values():
            assert cell["n"] == 1 and cell["contains_lo"] <= cell["contains"] <= cell["contains_hi"]


@pytest.mark.slow
def test_needle_grid_by_depth_and_length(model, tmp_path):
    from swaa.evaluation.data import make_needle_grid
    from swaa.evaluation.needle import needle_nll, needle_table
    m, tok = model
    rows = make_needle_grid(tok, lengths=(128, 256), depths=(0.0, 0.5, 1.0), n=2)
    assert len(rows) == 12 and rows["id"].is_unique
    for r in rows.itertuples():                              # the needle sits at its depth of the text
        ctx = r.prompt.rsplit("\n\n", 1)[0]
        at = ctx.index("The special magic number for") / len(ctx)
        assert abs(at - r.depth) < 0.2, (r.id, at)
        assert abs(r.length - r.context_length) <= 0.1 * r.context_length
    configs = [SWAAConfig(), SWAAConfig(sliding_window_size=16, keep_first=0)]
    per = needle_nll(m, tok, configs, rows, tmp_path / "needle.jsonl", progress=False)
    assert len(per) == 24 and set(per["mark"]) == {"full", "swa=16_sink=0"}
    lines = (tmp_path / "needle.jsonl").read_text()
    again = needle_nll(m, tok, configs, rows, tmp_path / "needle.jsonl", progress=False)
    assert (tmp_path / "needle.jsonl").read_text() == lines                # a rerun computes nothing
    assert again["answer_nll_mean"].tolist() == per["answer_nll_mean"].tolist()
    table = needle_table(per)
    assert len(table) == 12 and (table["n"] == 2).all()
    assert (table["answer_nll_mean_lo"] <= table["answer_nll_mean"]).all()
    by_mark = table.groupby("mark")["answer_nll_mean"].mean()
    assert by_mark["swa=16_sink=0"] > by_mark["full"] + 0.5                  # a 16-token window loses the needle
    assert m.config.swaa_config.is_full                                      # the model is left at full attention

    from swaa.ui.plots import plot_needle
    fig = plot_needle(table, ["full", "swa=16_sink=0"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 6 and all("[" in t for t in texts)                   # every cell: mean [lo, hi]
    assert "n = 2 per cell" in fig._suptitle.get_text()
