"""Synthetic long-context tasks for the default tokenizer, dataset loaders and their errors, answer NLL."""
import copy

import pandas as pd
import pytest
import torch

from swaa import SWAAConfig, apply_swaa
from swaa.evaluation.data import TASKS, load_dataset, make_dataset, make_task
from swaa.evaluation.scoring import answer_nll


@pytest.fixture(scope="module")
def tok():
    from swaa.models import default_model_path
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [256, 1024, 3000])
def test_tasks_hit_their_length_and_hold_the_answer_once(tok, task, length):
    rows = make_task(task, tok, length, n=3, seed=1)
    assert rows == make_task(task, tok, length, n=3, seed=1)                   # deterministic
    assert rows != make_task(task, tok, length, n=3, seed=2)
    for r in rows:
        assert abs(r["length"] - length) <= max(64, 0.1 * length), (r["length"], length)
        assert r["prompt"].endswith(r["question"]) and r["task"] == task
        if task in ("needle", "multikey"):
            assert r["prompt"].count(r["answer"]) == 1
        elif task == "multivalue":
            assert all(r["prompt"].count(v) == 1 for v in r["answer"].split(", "))
        elif task == "vartrack":
            value = r["question"].split("value ")[1].split(",")[0]
            assert r["prompt"].count(value) == 2                              # in the chain and in the question
        else:
            assert r["answer"] in "ABCD" and len(r["choices"]) == 4
            assert r["prompt"].count(r["choices"]["ABCD".index(r["answer"])]) >= 1


def test_make_dataset_and_bad_arguments(tok):
    df = make_dataset(tok, lengths=(256,), n=2)
    assert len(df) == 2 * len(TASKS) and set(df["task"]) == set(TASKS)
    with pytest.raises(ValueError, match="unknown task 'haystack'"):
        make_task("haystack", tok, 512)
    with pytest.raises(ValueError, match="length=10 is too short"):
        make_task("needle", tok, 10)


def test_loaders_and_schema_errors(tmp_path, tok):
    good = pd.DataFrame(make_task("needle", tok, 256, n=2))[["prompt", "question", "answer"]]
    good.to_parquet(tmp_path / "longmemeval_24k.parquet")
    assert len(load_dataset(tmp_path / "longmemeval_24k.parquet")) == 2
    ctx = pd.DataFrame({"context": ["a long text"], "question": ["what?"], "answer": ["x"]})
    ctx.to_parquet(tmp_path / "c.parquet")
    assert load_dataset(tmp_path / "c.parquet")["prompt"][0] == "Context: a long text\n\nQuestion: what?"
    pd.DataFrame({"text": ["x"], "label": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"lacks columns \['prompt', 'question', 'answer'\]: found \['text', 'label'\]"):
        load_dataset(tmp_path / "bad.parquet")
    good.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="is empty"):
        load_dataset(tmp_path / "empty.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="could not read dataset .*broken.parquet"):
        load_dataset(tmp_path / "broken.parquet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "missing.parquet")


@pytest.mark.parametrize("cfg", [SWAAConfig(), SWAAConfig(sliding_window_size=4, keep_first=1),
                                 SWAAConfig(sliding_window_size=4, keep_first=1, force_fa_decode=True)],
                         ids=lambda c: c.mark)
def test_answer_nll_equals_token_by_token_decoding(cfg):
    """Hand computation: prefill the prompt with a cache, then feed the answer one token at a time (decode steps),
    summing -log p(next answer token). One forward with prompt_length must give the same number."""
    from tests.integration.tiny_models import make_model
    model = apply_swaa(make_model("llama"), cfg, kv_eviction=False)
    g = torch.Generator().manual_seed(3)
    prompt, answer = torch.randint(3, 97, (20,), generator=g), torch.randint(3, 97, (6,), generator=g)
    got = answer_nll(model, prompt, answer)
    with torch.no_grad():
        out = model(prompt[None], use_cache=True)
        cache, logits, total = out.past_key_values, out.logits[0, -1], 0.0
        for t in answer:
            total -= torch.log_softmax(logits.float(), -1)[t].item()
            out = model(t.view(1, 1), past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1]
    assert got["answer_tokens"] == 6
    assert got["answer_nll"] == pytest.approx(total, rel=1e-5, abs=1e-4)
    with pytest.raises(ValueError, match="non-empty prompt and answer"):
        answer_nll(model, prompt, answer[:0])
