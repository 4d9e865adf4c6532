"""Results are keyed by what produced them: two different models saved under one folder name keep their own rows and
summary lines, the same model finds its rows again wherever it is saved, self-distillation on two datasets in one
folder returns each dataset's own prompts, and a results.jsonl cut mid-line is recovered with a warning.

Tiny random-weight Llama models with the default model's tokenizer (tests/integration/tiny_models.py)."""
import json
import re
import shutil

import pandas as pd
import pytest

from swaa import SWAAConfig
from swaa.training.distill import self_distill
from swaa.evaluation.run import EvalOptions, run_eval
from swaa.store.rows import ResultStore

from .tiny_models import make_model

DATA = pd.DataFrame({"id": ["r0", "r1"], "prompt": ["The code word is tulip. What is the code word?",
                                                      "Bob has 3 apples and Ann has 4. Who has more apples?"],
                     "question": ["What is the code word?", "Who has more apples?"], "answer": ["tulip", "Ann"]})
OPTS = EvalOptions(max_new_tokens=3, batch_size=2)
SETTINGS = [SWAAConfig(), SWAAConfig(sliding_window_size=8, keep_first=2)]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from swaa.models import default_model_path
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tok):
    """a/merged and b/merged: two models of one name; c/merged: a byte copy of a/merged."""
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 0), ("b", 1)):
        make_model("llama", seed=seed, vocab_size=len(tok)).save_pretrained(root / name / "merged")
        tok.save_pretrained(root / name / "merged")
    shutil.copytree(root / "a" / "merged", root / "c" / "merged")
    return {k: str(root / k / "merged") for k in "abc"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory, folders):
    """Both same-named models evaluated into one output folder."""
    out = tmp_path_factory.mktemp("shared")
    return out, run_eval([folders["a"], folders["b"]], SETTINGS, DATA, out, options=OPTS, progress=False)


def _summary(out):
    return [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]


def test_same_named_models_keep_their_own_rows_and_summary_lines(shared, folders, tmp_path):
    out, res = shared
    assert [r["model_name"] for r in res] == ["merged"] * 4
    fa, fb = res[0]["model_fingerprint"], res[2]["model_fingerprint"]
    assert fa != fb and {r["model_fingerprint"] for r in res} == {fa, fb}
    assert len({r["key"] for r in res}) == len({r["rows"] for r in res}) == len({r["parquet"] for r in res}) == 4
    assert sorted(s["key"] for s in _summary(out)) == sorted(r["key"] for r in res)      # four lines, none replaced
    assert res[0]["answer_nll_mean"] != res[2]["answer_nll_mean"]
    for model, mine in ((folders["a"], res[:2]), (folders["b"], res[2:])):   # each as it is when evaluated alone
        alone_out = tmp_path / model.split("/")[-2]
        alone = run_eval([model], SETTINGS, DATA, alone_out, options=OPTS, progress=False)
        for r, ref in zip(mine, alone):
            got, want = pd.read_parquet(out / r["parquet"]), pd.read_parquet(alone_out / ref["parquet"])
            assert got["response"].tolist() == want["response"].tolist()
            assert got["answer_nll_mean"].tolist() == want["answer_nll_mean"].tolist()
            assert r == ref


def test_the_same_model_reuses_its_rows_wherever_it_is_saved(shared, folders, tmp_path, monkeypatch):
    out = shutil.copytree(shared[0], tmp_path / "out")
    added = []
    original = ResultStore.add
    monkeypatch.setattr(ResultStore, "add", lambda self, row: added.append(row) or original(self, row))
    res = run_eval([folders["c"], folders["b"]], SETTINGS, DATA, out, options=OPTS, progress=False)
    assert added == []                                         # nothing generated again
    assert res == shared[1] and _summary(out) == _summary(shared[0])


def test_a_truncated_results_file_is_recovered_with_a_warning(shared, folders, tmp_path):
    out = shutil.copytree(shared[0], tmp_path / "out")
    text = (out / "results.jsonl").read_text()
    (out / "results.jsonl").write_text(text[:len(text) - 40])   # the last line cut mid-way, as by a power loss
    with pytest.warns(UserWarning, match=re.escape(f"{out / 'results.jsonl'}: dropped 1 incomplete line")):
        res = run_eval([folders["a"], folders["b"]], SETTINGS, DATA, out, options=OPTS, progress=False)
    assert res == shared[1] and _summary(out) == _summary(shared[0])


def test_distill_on_two_datasets_in_one_folder_returns_each_datasets_prompts(tok, tmp_path):
    model = make_model("llama", seed=0, vocab_size=len(tok))
    other = DATA.assign(prompt=["Where is the key? It is in the drawer.", "The sky is green today. What colour?"])
    kw = dict(n=1, temperature=0.0, max_new_tokens=2, progress=False)
    first = self_distill(model, tok, DATA.drop(columns="id"), tmp_path, **kw)     # ids row0, row1 in both
    second = self_distill(model, tok, other.drop(columns="id"), tmp_path, **kw)
    assert [r["prompt"] for r in first] == DATA["prompt"].tolist()
    assert [r["prompt"] for r in second] == other["prompt"].tolist()
    assert [r["id"] for r in second] == ["row0", "row1"]
    lines = (tmp_path / "distill.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert self_distill(model, tok, DATA.drop(columns="id"), tmp_path, **kw) == first      # reused, not sampled
    assert (tmp_path / "distill.jsonl").read_text().splitlines() == lines
    another = self_distill(make_model("llama", seed=1, vocab_size=len(tok)), tok, DATA, tmp_path, **kw)
    assert [r["prompt"] for r in another] == DATA["prompt"].tolist()              # another model: its own rows
    assert len((tmp_path / "distill.jsonl").read_text().splitlines()) == 6
