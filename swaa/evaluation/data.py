"""Long-context data: real offline text, synthetic long-context tasks built locally from a seed, and loaders for
the paper's parquet datasets. Rows have ``prompt``, ``question``, ``answer``, ``task``, ``length`` and, for
multiple-choice tasks, ``choices``.

Offline text exists on every machine: Debian's license texts (package base-files) and Python's own
``pydoc_data.topics``. Synthetic tasks (single needle, multi-key needle, multi-value, variable tracking, QA over a
haystack) are deterministic for a (task, tokenizer, length, seed) and aim at a target length in tokens of the
given tokenizer; the answer occurs exactly once in the prompt.
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

__all__ = ["offline_text", "offline_token_ids", "TEXT_SOURCES", "TASKS", "make_task", "make_dataset",
           "make_needle_grid", "load_dataset", "read_table", "validate_dataset", "check_values", "group_fields",
           "REQUIRED_COLUMNS", "GROUP_COLUMNS"]

_LICENSES = Path("/usr/share/common-licenses")
TEXT_SOURCES = ("gpl3", "licenses", "pydoc")
TASKS = ("needle", "multikey", "multivalue", "vartrack", "qa")
REQUIRED_COLUMNS = ("prompt", "question", "answer")
# a benchmark's own categories, kept in every eval row for per-category tables (text values only: synthetic rows'
# ``length`` is a token count, LongBench v2's its length class)
GROUP_COLUMNS = ("question_type", "domain", "sub_domain", "difficulty", "length")


def _pydoc_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def offline_text(source: str = "gpl3") -> str:
    """``gpl3``: the GPL-3 text (~5.6k words); ``licenses``: every license text Debian ships, concatenated;
    ``pydoc``: Python's help topics (~1.2M characters). Falls back to ``pydoc`` where Debian's files are absent."""
    if source not in TEXT_SOURCES:
        raise ValueError(f"source={source!r} is not one of {TEXT_SOURCES}")
    if source == "gpl3" and (_LICENSES / "GPL-3").exists():
        return (_LICENSES / "GPL-3").read_text()
    if source == "licenses" and _LICENSES.is_dir():
        files = sorted(p for p in _LICENSES.iterdir() if p.is_file())
        return "\n\n".join(p.read_text(errors="replace") for p in files)
    return _pydoc_text()


def offline_token_ids(tokenizer, n_tokens: int, source: str = "gpl3", offset: int = 0):
    """The first ``n_tokens`` token ids (after ``offset``) of an offline text, as a (1, n_tokens) LongTensor."""
    import torch

    ids = tokenizer(offline_text(source), add_special_tokens=False)["input_ids"]
    if len(ids) < offset + n_tokens and source != "pydoc":
        ids = ids + tokenizer("\n\n" + _pydoc_text(), add_special_tokens=False)["input_ids"]
    if len(ids) < offset + n_tokens:
        raise ValueError(f"n_tokens={n_tokens} (offset {offset}) exceeds the {len(ids)} tokens of the offline text")
    return torch.tensor([ids[offset:offset + n_tokens]])


# -- synthetic tasks --------------------------------------------------------------------------------------------

_WORDS = ("amber", "basil", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kestrel",
          "lumen", "marble", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra", "umber", "velvet",
          "willow", "xenon", "yarrow", "zephyr")


@functools.lru_cache(maxsize=8)
def _sentences(source: str) -> tuple[str, ...]:
    text = offline_text(source) if source != "mixed" else offline_text("licenses")
    out = []
    for para in text.split("\n\n"):
        para = " ".join(para.split())
        out.extend(s.strip().rstrip(".") + "." for s in para.split(". ") if len(s.split()) >= 4)
    return tuple(out)


def _ntok(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _haystack(tokenizer, rng: random.Random, budget: int, source: str, inserts: list[str],
              depth: float | None = None) -> str:
    """Sentences of real text up to ``budget`` tokens, with ``inserts`` placed at random depths, or together at the
    sentence boundary nearest ``depth`` (the fraction of the text's tokens before them: 0 first, 1 last)."""
    sents = _sentences(source)
    i = rng.randrange(len(sents))
    body, before = [], [0]                             # before[k]: tokens of the text ahead of sentence k
    while True:
        s = sents[i % len(sents)]
        n = _ntok(tokenizer, " " + s)
        if before[-1] + n > budget:
            rest = budget - before[-1]                 # fill the remainder with the start of the next sentence
            if rest > 2:
                ids = tokenizer(" " + s, add_special_tokens=False)["input_ids"][:rest]
                body.append(tokenizer.decode(ids).strip())
                before.append(budget)
            break
        body.append(s)
        before.append(before[-1] + n)
        i += 1
    if depth is not None:
        at = min(range(len(before)), key=lambda k: abs(before[k] - depth * before[-1]))
        return " ".join(body[:at] + inserts + body[at:])
    for ins in inserts:                                # never after the cut-off tail sentence
        body.insert(rng.randrange(max(1, len(body))), ins)
    return " ".join(body)


def _number(rng) -> str:
    return str(rng.randrange(1_000_000, 9_999_999))


def _key(rng) -> str:
    return f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randrange(100, 999)}"


def _build(task: str, rng: random.Random):
    """(inserted sentences, question, answer, choices or None) for one row of a needle-style task."""
    if task == "needle":
        k, v = _key(rng), _number(rng)
        return [f"The special magic number for {k} is {v}."], f"What is the special magic number for {k}?", v, None
    if task == "multikey":
        keys = list(dict.fromkeys(_key(rng) for _ in range(4)))
        vals = [_number(rng) for _ in keys]
        j = rng.randrange(len(keys))
        return ([f"The special magic number for {k} is {v}." for k, v in zip(keys, vals)],
                f"What is the special magic number for {keys[j]}?", vals[j], None)
    if task == "multivalue":
        k = _key(rng)
        vals = sorted({_number(rng) for _ in range(3)})
        return ([f"One of the special magic numbers for {k} is {v}." for v in vals],
                f"What are all the special magic numbers for {k}? List them in increasing order, separated by "
                "commas.", ", ".join(vals), None)
    if task == "vartrack":
        v = _number(rng)
        names = [f"V{rng.randrange(10000, 99999)}" for _ in range(4)]
        chain = [f"VAR {names[0]} = {v}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        return (chain, f"Which variables are assigned the value {v}, directly or through other variables? List them "
                "in order of assignment, separated by commas.", ", ".join(names), None)
    if task == "qa":
        return None                      # built from the haystack itself, see make_task
    raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")


def make_task(task: str, tokenizer, length: int, n: int = 10, seed: int = 0, source: str = "licenses") -> list[dict]:
    """``n`` rows of ``task`` whose prompts are about ``length`` tokens of ``tokenizer`` (deterministic)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")
    if length < 64:
        raise ValueError(f"length={length} is too short for a long-context task (use >= 64 tokens)")
    rows = []
    for i in range(n):
        rng = random.Random(f"{task}|{length}|{seed}|{i}")
        if task == "qa":
            sents = [x for x in _sentences(source) if len(x.split()) <= 25]
            other = [x for x in _sentences("pydoc") if len(x.split()) <= 25]
            true = sents[rng.randrange(len(sents))]
            distract = rng.sample(other, 3)
            choices = distract + [true]
            rng.shuffle(choices)
            letter = "ABCD"[choices.index(true)]
            question = ("Which of the following sentences appears in the text above?\n"
                        + "\n".join(f"{'ABCD'[j]}. {c}" for j, c in enumerate(choices))
                        + "\nAnswer with the letter only.")
            fixed = _ntok(tokenizer, question) + _ntok(tokenizer, " " + true) + 8
            ctx = _haystack(tokenizer, rng, max(16, length - fixed), source, [true])
            rows.append(dict(prompt=f"{ctx}\n\n{question}", question=question, answer=letter, task=task,
                             choices=choices))
        else:
            rows.append(_inserted_row(task, tokenizer, rng, length, source))
        rows[-1]["length"] = _ntok(tokenizer, rows[-1]["prompt"])
        rows[-1]["id"] = f"{task}-{length}-{seed}-{i}"
    return rows


def _inserted_row(task: str, tokenizer, rng, length: int, source: str, depth: float | None = None) -> dict:
    inserts, question, answer, _ = _build(task, rng)
    fixed = _ntok(tokenizer, " ".join(inserts)) + _ntok(tokenizer, question) + 8
    ctx = _haystack(tokenizer, rng, max(16, length - fixed), source, inserts, depth)
    return dict(prompt=f"{ctx}\n\n{question}", question=question, answer=answer, task=task, choices=None)


def make_needle_grid(tokenizer, lengths=(256, 512, 1024), depths=(0.0, 0.25, 0.5, 0.75, 1.0), n: int = 2,
                     seed: int = 0, source: str = "licenses"):
    """The needle-in-a-haystack grid: ``n`` single-needle rows per (context length, needle depth), the needle
    sentence at ``depth`` of the text (0: first, 1: last), as a DataFrame with ``context_length`` and ``depth``."""
    import pandas as pd
    bad = [d for d in depths if not 0 <= d <= 1]
    if bad or min(lengths) < 64:
        raise ValueError(f"depths {bad} are outside [0, 1]" if bad else
                         f"length={min(lengths)} is too short for a long-context task (use >= 64 tokens)")
    rows = []
    for length in lengths:
        for depth in depths:
            for i in range(n):
                row = _inserted_row("needle", tokenizer, random.Random(f"needle-depth|{length}|{depth}|{seed}|{i}"),
                                    length, source, depth)
                rows.append(dict(row, id=f"needle-{length}-d{depth:g}-{seed}-{i}", context_length=length,
                                 depth=depth, length=_ntok(tokenizer, row["prompt"])))
    return pd.DataFrame(rows)


def make_dataset(tokenizer, lengths=(512, 1024), tasks=TASKS, n: int = 10, seed: int = 0):
    """All tasks at all lengths as a pandas DataFrame."""
    import pandas as pd
    return pd.DataFrame([r for t in tasks for length in lengths for r in make_task(t, tokenizer, length, n, seed)])


# -- the paper's datasets -----------------------------------------------------------------------------------------

def load_dataset(path_or_id: str | Path):
    """A dataset as a DataFrame with ``prompt``, ``question``, ``answer``: a local parquet/jsonl file (the paper's
    ``longmemeval_24k.parquet``, ``longbenchv2_qa.parquet``, ``fusang_long.parquet``), a released LongBench v2 or
    LongMemEval JSON file as it is (:mod:`swaa.evaluation.benchmark_files`), or a hub id when online and the
    ``datasets`` package is installed. ``context`` + ``question`` become ``prompt`` as the paper's evaluation does
    (``Context: ...`` then ``Question: ...``)."""
    import pandas as pd

    from .benchmark_files import read_benchmark_file
    path = Path(path_or_id)
    if path.suffix in (".parquet", ".jsonl", ".json") or path.exists():
        df = read_benchmark_file(path)
        if df is None:
            df = read_table(path, "dataset", "prompt/question/answer columns (or a released LongBench v2 or "
                            "LongMemEval JSON file)")
    else:
        try:
            import datasets
        except ImportError:
            raise ValueError(f"{str(path_or_id)!r} is not a local file, and loading a hub id needs the `datasets` "
                             "package and network access; pass a local parquet path instead") from None
        df = datasets.load_dataset(str(path_or_id), split="train").to_pandas()
    return validate_dataset(df, str(path_or_id))


def read_table(path, what: str = "table", columns: str = "its columns"):
    """A parquet, JSON-lines or JSON file as a DataFrame; a file that is not one names itself (and the line of
    broken JSON). ``what`` and ``columns`` say what the file should be and hold, for the error."""
    import pandas as pd

    from ..jsonfile import check_syntax
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a file")
    if path.suffix not in (".parquet", ".jsonl", ".json"):
        raise ValueError(f"{str(path)!r}: expected a .parquet, .jsonl or .json file with {columns}")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=path.suffix == ".jsonl")
    except Exception as e:
        check_syntax(path)                       # broken JSON: the error names the line
        raise ValueError(f"could not read {what} {str(path)!r} ({type(e).__name__}: {e}); expected a parquet file "
                         f"or JSON (lines) with {columns}") from e


def group_fields(row) -> dict:
    """The benchmark categories of one dataset row (:data:`GROUP_COLUMNS` whose value is text)."""
    return {c: row[c] for c in GROUP_COLUMNS if c in row and isinstance(row[c], str)}


def _missing(value) -> bool:
    import pandas as pd
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):                    # lists and arrays are values, not missing
        return False


def check_values(df, name: str, answer_column: str = "answer") -> None:
    """Every prompt is text and every answer (``answer_column``) is given: a number or a null there is a broken row,
    not data (a null answer would be scored, or trained on, as the text "nan")."""
    ids = df["id"].tolist() if "id" in df.columns else [None] * len(df)
    for n, (rid, prompt, answer) in enumerate(zip(ids, df["prompt"], df[answer_column])):
        row = f"row {n}" + (f" (id {rid!r})" if rid is not None else "")
        if not isinstance(prompt, str):
            raise ValueError(f"{name}: {row} has prompt {str(prompt)[:40]!r} of type {type(prompt).__name__}; every "
                             "prompt must be text")
        if _missing(answer):
            raise ValueError(f"{name}: {row} has no {answer_column} ({answer!r}); every row needs one")


def validate_dataset(df, name: str = "dataset"):
    if len(df) == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    _refuse_duplicate_ids(df, name)
    cols = list(df.columns)
    if "prompt" not in df.columns and {"context", "question"} <= set(df.columns):
        from .benchmark_files import context_prompt
        df = df.copy()
        df["prompt"] = [context_prompt(str(c), str(q)) for c, q in zip(df["context"], df["question"])]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}: found {cols}; expected {list(REQUIRED_COLUMNS)} "
                         "(or context + question instead of prompt)")
    check_values(df, name)
    return df


def _refuse_duplicate_ids(df, name: str) -> None:
    """Each ``id`` names one row: results are reported by id, so two rows sharing one would read as one."""
    if "id" not in df.columns:
        return
    ids = df["id"].astype(str)
    dup = list(dict.fromkeys(ids[ids.duplicated()]))
    if dup:
        shown = ", ".join(repr(i) for i in dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
        raise ValueError(f"{name} has {len(dup)} duplicated id{'s' * (len(dup) > 1)}: {shown}; give every row its own "
                         "id, or drop the id column and rows are numbered row0, row1, ...")
