"""The benchmarks' own released files, read as they are: LongBench v2 and LongMemEval (S, M, oracle) JSON lists.

Each item becomes one eval row (``id``, ``prompt``, ``question``, ``answer``, ``task`` and the benchmark's own fields)
with the prompt built as the paper's evaluation builds it from a context and a question (its repository
``yuyijiong/sliding-window-attention-adaptation``, ``Eval/eval_swaa.py``: ``"Context: " + context + "\\n\\nQuestion: " +
question``, then the chat template):

- LongBench v2 (``_id``, ``domain``, ``sub_domain``, ``difficulty``, ``length``, ``question``, ``choice_A``..``choice_D``,
  ``answer`` a letter, ``context``): the question block is LongBench v2's own (its ``prompts/0shot.txt``: the
  question, the four choices as ``(A) ...``, and the instruction to answer "The correct answer is (X)"), which the
  paper's scoring reads (``Eval/gpt_eval.py``: the last "The correct answer is (X)" in the response). The row keeps
  its ``choices`` (scored by the letter), ``task`` is the domain, and sub_domain, difficulty and length stay.
- LongMemEval (``question_id``, ``question_type``, ``question``, ``answer``, ``question_date``, ``haystack_session_ids``,
  ``haystack_dates``, ``haystack_sessions`` of ``{role, content}`` turns, ``answer_session_ids``): the context is the
  history in LongMemEval's layout (``### Session i:``, ``Session Date:``, ``Session Content:``, one ``role: content``
  line per turn; its ``has_answer`` marks are not shown) followed by ``Current Date: <question_date>``; ``task`` and
  ``question_type`` are the question type (per-type tables), answers that are numbers become text.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["LONGBENCH_V2_FIELDS", "LONGMEMEVAL_FIELDS", "read_benchmark_file", "longbench_v2_rows",
           "longmemeval_rows", "context_prompt"]

LONGBENCH_V2_FIELDS = ("_id", "domain", "sub_domain", "difficulty", "length", "question", "choice_A", "choice_B",
                       "choice_C", "choice_D", "answer", "context")
LONGMEMEVAL_FIELDS = ("question_id", "question_type", "question", "answer", "question_date", "haystack_session_ids",
                      "haystack_dates", "haystack_sessions", "answer_session_ids")
# a field only one of the two schemas has: an item holding it is taken for that benchmark (and checked whole)
_MARKS = {"choice_A": ("LongBench v2", LONGBENCH_V2_FIELDS), "haystack_sessions": ("LongMemEval", LONGMEMEVAL_FIELDS)}
LETTERS = "ABCD"


def context_prompt(context: str, question: str) -> str:
    """The paper's prompt from a context and a question (``Eval/eval_swaa.py``)."""
    return f"Context: {context}\n\nQuestion: {question}"


def _longbench_question(item: dict) -> str:
    choices = "\n".join(f"({x}) {str(item['choice_' + x]).strip()}" for x in LETTERS)
    return (f"What is the correct answer to this question: {str(item['question']).strip()}\nChoices:\n{choices}\n\n"
            'Format your response as follows: "The correct answer is (insert answer here)".')


def longbench_v2_rows(items: list[dict], name: str = "LongBench v2"):
    """Eval rows of LongBench v2 items (checked: every field present, the answer one of A-D)."""
    import pandas as pd
    rows = []
    for n, item in enumerate(items):
        answer = str(item["answer"]).strip().upper()
        if answer not in LETTERS:
            raise ValueError(f"{name}: item {n} (_id {item['_id']!r}) has answer {item['answer']!r}; LongBench v2 "
                             "answers are one of the letters A, B, C, D")
        question = _longbench_question(item)
        rows.append(dict(id=str(item["_id"]), prompt=context_prompt(str(item["context"]), question), question=question,
                         answer=answer, choices=[str(item["choice_" + x]) for x in LETTERS], task=str(item["domain"]),
                         domain=str(item["domain"]), sub_domain=str(item["sub_domain"]),
                         difficulty=str(item["difficulty"]), length=str(item["length"])))
    return pd.DataFrame(rows)


def _history(item: dict, n: int, name: str) -> str:
    sessions, dates = item["haystack_sessions"], item["haystack_dates"]
    if not isinstance(sessions, list) or not isinstance(dates, list) or len(sessions) != len(dates):
        raise ValueError(f"{name}: item {n} (question_id {item['question_id']!r}) has "
                         f"{len(sessions) if isinstance(sessions, list) else sessions!r} haystack_sessions and "
                         f"{len(dates) if isinstance(dates, list) else dates!r} haystack_dates; give one date per "
                         "session")
    blocks = []
    for i, (date, turns) in enumerate(zip(dates, sessions), 1):
        try:
            lines = "\n".join(f"{t['role']}: {str(t['content']).strip()}" for t in turns)
        except (KeyError, TypeError):
            raise ValueError(f"{name}: item {n} (question_id {item['question_id']!r}), haystack_sessions[{i - 1}]: "
                             "every turn must be an object with role and content") from None
        blocks.append(f"### Session {i}:\nSession Date: {date}\nSession Content:\n{lines}")
    return "\n\n".join(blocks)


def longmemeval_rows(items: list[dict], name: str = "LongMemEval"):
    """Eval rows of LongMemEval items (S, M or oracle: the same fields, more or fewer sessions)."""
    import pandas as pd
    rows = []
    for n, item in enumerate(items):
        context = f"{_history(item, n, name)}\n\nCurrent Date: {item['question_date']}"
        rows.append(dict(id=str(item["question_id"]), prompt=context_prompt(context, str(item["question"])),
                         question=str(item["question"]), answer=str(item["answer"]), task=str(item["question_type"]),
                         question_type=str(item["question_type"]), question_date=str(item["question_date"]),
                         answer_session_ids=[str(s) for s in item["answer_session_ids"]]))
    return pd.DataFrame(rows)


def read_benchmark_file(path: str | Path):
    """The rows of a released LongBench v2 or LongMemEval file, or None when the JSON file is neither (another
    table, read by :func:`swaa.evaluation.data.read_table`)."""
    from ..jsonfile import read_json
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return None
    items = read_json(path)
    if not isinstance(items, list) or not items or not all(isinstance(x, dict) for x in items):
        return None
    for mark, (bench, fields) in _MARKS.items():
        if mark not in items[0]:
            continue
        for n, item in enumerate(items):
            missing = [f for f in fields if f not in item]
            if missing:
                raise ValueError(f"{path}: item {n} lacks {missing}; a {bench} file has {list(fields)} in every item")
        return (longbench_v2_rows if bench == "LongBench v2" else longmemeval_rows)(items, str(path))
    return None


if __name__ == "__main__":                   # python -m swaa.evaluation.benchmark_files FILE: the first prompt
    import sys
    print(read_benchmark_file(sys.argv[1])["prompt"].iloc[0] if len(sys.argv) > 1 else __doc__)
