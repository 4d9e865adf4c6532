"""LongBench v2 and LongMemEval files read as released (fixtures written in each schema), prompts as the paper's
evaluation builds them, their errors; the lm-eval task written over rows, scored as swaa eval scores."""
import json
from pathlib import Path

import pandas as pd
import pytest

from swaa.evaluation.benchmark_files import LONGBENCH_V2_FIELDS, LONGMEMEVAL_FIELDS, context_prompt
from swaa.evaluation.data import load_dataset
from swaa.evaluation.lm_eval_task import process_results, write_task
from swaa.evaluation.scoring import choice_letter, score_response

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_longbench_v2_as_released():
    items = json.loads((FIXTURES / "longbench_v2.json").read_text())
    assert set(items[0]) == set(LONGBENCH_V2_FIELDS)
    df = load_dataset(FIXTURES / "longbench_v2.json")
    assert df["id"].tolist() == [x["_id"] for x in items] and df["answer"].tolist() == ["B", "C", "C"]
    row, item = df.iloc[0], items[0]
    assert list(row["choices"]) == [item[f"choice_{x}"] for x in "ABCD"]                 # kept in the row
    assert row["task"] == row["domain"] == "Single-Document QA"
    assert (row["sub_domain"], row["difficulty"], row["length"]) == ("Literary", "easy", "short")
    assert row["prompt"] == context_prompt(item["context"], row["question"])
    assert row["prompt"].startswith("Context: The lighthouse keeper") and "\n\nQuestion: What is the correct answer" \
        " to this question: What does the keeper light" in row["prompt"]
    assert "(B) The green lamp in the north window\n" in row["prompt"]
    assert row["prompt"].endswith('Format your response as follows: "The correct answer is (insert answer here)".')


def test_longmemeval_as_released():
    items = json.loads((FIXTURES / "longmemeval_s.json").read_text())
    assert set(items[0]) == set(LONGMEMEVAL_FIELDS)
    df = load_dataset(FIXTURES / "longmemeval_s.json")
    assert df["task"].tolist() == df["question_type"].tolist() == [x["question_type"] for x in items]
    assert df["answer"].tolist()[1] == "12"                                                 # a number becomes text
    p = df["prompt"].iloc[0]
    first, second = (f"### Session {k}:\nSession Date: " for k in (1, 2))          # LongMemEval's layout
    assert p.startswith(f"Context: {first}2023/05/20 (Sat) 02:21\nSession Content:\nuser: Can ")
    assert f"\n\n{second}2023/05/22 (Mon) 10:05\nSession Content:\nuser: I graduated" in p
    assert "has_answer" not in p and "True" not in p
    assert p.endswith("\n\nCurrent Date: 2023/05/30 (Tue) 23:40\n\nQuestion: What degree did I graduate with?")
    assert df["question"].iloc[0] == "What degree did I graduate with?"


def _write(tmp_path, name, items):
    (tmp_path / name).write_text(json.dumps(items))
    return tmp_path / name


def test_broken_benchmark_files_name_the_item_and_the_fix(tmp_path):
    lb = json.loads((FIXTURES / "longbench_v2.json").read_text())
    lm = json.loads((FIXTURES / "longmemeval_s.json").read_text())
    with pytest.raises(ValueError, match=r"item 1 lacks \['context'\]; a LongBench v2 file has"):
        load_dataset(_write(tmp_path, "a.json", [lb[0], {k: v for k, v in lb[1].items() if k != "context"}]))
    with pytest.raises(ValueError, match=r"item 0 \(_id '66f1a2b3c4d5e6f708192a3b'\) has answer 'E'; .* A, B, C, D"):
        load_dataset(_write(tmp_path, "b.json", [dict(lb[0], answer="E")]))
    with pytest.raises(ValueError, match=r"item 0 \(question_id 'e47becba'\) has 2 haystack_sessions and 1 "
                                         r"haystack_dates; give one date per session"):
        load_dataset(_write(tmp_path, "c.json", [dict(lm[0], haystack_dates=lm[0]["haystack_dates"][:1])]))
    with pytest.raises(ValueError, match=r"haystack_sessions\[0\]: every turn must be an object with role and content"):
        load_dataset(_write(tmp_path, "d.json", [dict(lm[0], haystack_sessions=[["hi"], []])]))
    with pytest.raises(ValueError, match=r"item 0 lacks \['question_date'\]; a LongMemEval file has"):
        load_dataset(_write(tmp_path, "e.json", [{k: v for k, v in lm[0].items() if k != "question_date"}]))
    # a JSON list of plain rows is still a table
    plain = load_dataset(_write(tmp_path, "f.json", [{"prompt": "p", "question": "q", "answer": "a"}]))
    assert plain["prompt"].tolist() == ["p"]


def test_context_and_question_columns_become_the_papers_prompt(tmp_path):
    pd.DataFrame({"context": ["a long text"], "question": ["what?"], "answer": ["x"]}).to_parquet(tmp_path / "c.parquet")
    assert load_dataset(tmp_path / "c.parquet")["prompt"][0] == "Context: a long text\n\nQuestion: what?"


@pytest.mark.parametrize("response,letter", [
    ("The correct answer is (C)", "C"),
    ("Maybe the answer is A. The correct answer is (B). The correct answer is (D)", "D"),    # the last statement wins
    ("The correct answer is B", "B"),
    ("**The correct answer is (A)**", "A"),
    ("<think>The correct answer is (A)?</think>The correct answer is (C)", "C"),
    ("B", "B"),                                                                              # the looser forms remain
])
def test_the_papers_letter_rule_comes_first(response, letter):
    assert choice_letter(response) == letter


def test_task_files_and_their_scoring(tmp_path):
    rows = load_dataset(FIXTURES / "longbench_v2.json")
    yaml = write_task(rows, tmp_path / "tasks", name="swaa_lb", max_new_tokens=12)
    text = yaml.read_text()
    assert "task: swaa_lb\n" in text and "max_gen_toks: 12\n" in text and "until: []" in text
    assert "do_sample: false" in text and "output_type: generate_until" in text
    assert "process_results: !function swaa.evaluation.lm_eval_task.process_results" in text
    assert json.dumps(str((tmp_path / "tasks" / "swaa_lb.jsonl").resolve())) in text
    docs = [json.loads(line) for line in (tmp_path / "tasks" / "swaa_lb.jsonl").read_text().splitlines()]
    assert [d["id"] for d in docs] == rows["id"].tolist() and docs[0]["choices"] == list(rows["choices"].iloc[0])
    for response in ("The correct answer is (B)", "(A)", "nothing"):
        want = score_response(response, "B", docs[0]["choices"])
        assert process_results(docs[0], [response]) == {m: want[m] for m in ("exact_match", "contains", "token_f1")}
    with pytest.raises(ValueError, match="task name 'a b'"):
        write_task(rows, tmp_path, name="a b")
