"""Resumable evaluation of models under a grid of SWAA settings on a long-context dataset (HF or vLLM engine).

For each (model, setting): every row's prompt goes through the chat template (optionally with a CoT suffix),
prompts longer than ``max_prompt_tokens`` are filtered out (counted), a prompt beyond the model's maximum positions is
refused (or middle-truncated with ``truncate_prompts``, counted; :mod:`swaa.evaluation.prompts`), batches are generated
greedily with left padding, responses are scored by rule (thinking stripped) and by answer NLL. Rows are appended to
``OUT/rows/<model>-<fp>/<mark>-<fp>.jsonl`` as each batch finishes, keyed by the model's fingerprint, the setting's
(SWAA config, engine, dtype, generation options) and the row's content (see :mod:`swaa.store.rows`); a rerun skips
every finished row, and two different models never share one, whatever their folders are called. When a (model,
setting) is complete, ``OUT/<model>-<fp>/<mark>-<fp>.parquet`` is written atomically and a summary line with the
original fields (model_name, use_vllm, sliding_window_size, keep_first, force_fa_decode, non_sliding_layers), the
fingerprints, the two files' paths and the metrics goes to ``OUT/results.jsonl``: each metric with ``n`` and its 95%
interval (``<metric>_lo``, ``<metric>_hi``; :mod:`swaa.evaluation.stats`), overall and per task. A run directory remembers its
dataset and generation settings: reusing it with a changed dataset or changed settings is an error, not a silent
mix. Every argument, and every model's prompts, are checked before the first file is written: a refused run leaves
nothing behind.

``engine="vllm"`` generates with vLLM and the SWAA plugin (one engine per setting, the config passed through
``hf_overrides``); the answer NLL is still computed by the HF model, which is where the answer tokens can be
given FA decode by ``prompt_length`` (vLLM has no "these prompt tokens are decode tokens" switch).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import SWAAConfig, load_settings
from ..store.fingerprint import fingerprint, model_fingerprint, readable_name
from .prompts import COT_SUFFIX, chat_prompts, max_positions
from ..store.rows import ResultStore, atomic_write_text, read_rows

__all__ = ["EvalOptions", "run_eval", "COT_SUFFIX", "METRICS"]

# the summary's cells: each with n and a 95% interval (Wilson for the 0/1 scores, a bootstrap for the means)
METRICS = ("exact_match", "contains", "token_f1", "answer_nll_mean", "judge_score")

@dataclass
class EvalOptions:
    max_new_tokens: int = 32
    batch_size: int = 4
    max_prompt_tokens: int | None = None
    sample_first: int | None = None
    cot: bool = False
    answer_nll: bool = True
    device: str = "cpu"
    truncate_prompts: bool = False      # cut prompts beyond the model's positions in the middle instead of refusing
    vllm_kwargs: dict | None = None     # extra vllm.LLM arguments (tensor_parallel_size, dtype, ...)

    def __post_init__(self):
        for name, optional in (("max_new_tokens", False), ("batch_size", False), ("max_prompt_tokens", True),
                               ("sample_first", True)):
            v = getattr(self, name)
            if not (optional and v is None) and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} is invalid: use an int >= 1" + (" (or None)" if optional else ""))


def _fingerprint(df, opts: EvalOptions) -> str:
    h = hashlib.sha256()
    for col in ("prompt", "answer"):
        h.update("\x1f".join(map(str, df[col].tolist())).encode())
    h.update(json.dumps({k: v for k, v in asdict(opts).items() if k not in ("batch_size", "device", "vllm_kwargs")},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def _check_run_dir(out: Path, fingerprint: str, overwrite: bool) -> bool:
    """Refuse a folder made for other data or settings unless ``overwrite``; True when its old results must go."""
    meta = out / "run.json"
    if not meta.exists():
        return False
    old = json.loads(meta.read_text()).get("fingerprint")
    if old != fingerprint and not overwrite:
        raise ValueError(f"{out} holds results for another dataset or other generation settings (fingerprint {old}"
                         f", now {fingerprint}); use a new output folder, or overwrite=True to start over")
    return old != fingerprint


def _claim_run_dir(out: Path, fingerprint: str, clear: bool) -> None:
    if clear:                                   # overwrite: the old rows must not be reused for the new settings
        import shutil
        shutil.rmtree(out / "rows", ignore_errors=True)
        for f in [*out.glob("*/*.parquet"), out / "results.jsonl"]:
            f.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "run.json"
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    tmp.replace(meta)


def _prompts(model_id, df, opts: EvalOptions):
    """The chat prompts of ``df`` for one model, from its tokenizer and config alone (no weights loaded)."""
    from transformers import AutoConfig, AutoTokenizer

    from ..models import default_model_path
    path = default_model_path() if model_id is None else model_id
    try:
        tok, config = AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"unknown model {model_id!r}: {e}") from e
    return chat_prompts(tok, df["prompt"], ids=df["id"], cot=opts.cot, max_prompt_tokens=opts.max_prompt_tokens,
                        max_positions=max_positions(config), reserve=opts.max_new_tokens,
                        truncate=opts.truncate_prompts)


def _atomic_parquet(df, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _append_summary(path: Path, summary: dict) -> None:
    """results.jsonl: one line per (model, setting) key; a rerun replaces its own line (atomically)."""
    rows = [r for r in read_rows(path) if r.get("key") != summary["key"]]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in [*rows, summary]))


def _setting_fingerprint(cfg: SWAAConfig, engine: str, model, opts: EvalOptions) -> str:
    """What decides a row's output besides the model and the prompt: batch size and device change only speed and
    padding numerics; the dtype the model runs in is keyed instead of the device that picks it."""
    gen = {k: v for k, v in asdict(opts).items() if k not in ("batch_size", "device")}
    return fingerprint(cfg.to_dict(), engine, str(next(model.parameters()).dtype), gen)


def run_eval(models, settings, dataset, out, *, engine: str = "hf", options: EvalOptions | None = None,
             overwrite: bool = False, progress: bool = True, judge=None) -> list[dict]:
    """Evaluate ``models`` (paths/hub ids; None = the default model) under ``settings`` (a settings-list JSON path,
    a list of SWAAConfig, or the original list of dicts) on ``dataset`` (a DataFrame or a path for
    :func:`swaa.evaluation.data.load_dataset`). Returns the summary rows.

    ``judge``: an optional :class:`swaa.evaluation.judge.Judge`; it grades the stored responses of a finished setting (its
    cache makes reruns free). If it cannot be reached, the generated rows stay on disk and the error says so."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .data import group_fields, load_dataset, validate_dataset
    from ..integrations.transformers import apply_swaa
    from ..integrations.transformers import load_model
    from .scoring import answer_nll, choices_of, score_response
    from .stats import cell

    if engine not in ("hf", "vllm"):
        raise ValueError(f"engine={engine!r} is unknown: use 'hf' (transformers) or 'vllm' (the SWAA vLLM plugin)")
    opts = options or EvalOptions()
    df = dataset if isinstance(dataset, pd.DataFrame) else load_dataset(dataset)
    df = validate_dataset(df)
    if opts.sample_first:
        df = df.iloc[:opts.sample_first]
    if "id" not in df.columns:
        df = df.assign(id=[f"row{i}" for i in range(len(df))])
    if isinstance(settings, (str, os.PathLike)):
        cfgs = [c for c, _ in load_settings(settings)]
    else:
        cfgs = [c if isinstance(c, SWAAConfig) else SWAAConfig.from_dict(c.get("swaa_config", c)) for c in settings]
    if not cfgs:
        raise ValueError("the settings list is empty: give at least one SWAA setting")
    out = Path(out)
    run_fp = _fingerprint(df, opts)
    clear = _check_run_dir(out, run_fp, overwrite)
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    prompts = [_prompts(m, df, opts) for m in models]           # every model's prompts checked before any write
    summaries = []
    for k, (model_id, p) in enumerate(zip(models, prompts)):
        try:
            model, tok = load_model(model_id, device=opts.device)
        except OSError as e:
            raise ValueError(f"unknown model {model_id!r}: {e}") from e
        if k == 0:                                  # the folder is claimed once the first model is there
            _claim_run_dir(out, run_fp, clear)
        name, model_fp = readable_name(model_id), model_fingerprint(model_id)
        unit = f"{name}-{model_fp[:8]}"
        chat, chat_ids, keep = p.chat, p.ids, p.keep
        content = {i: fingerprint(chat[i], str(df["answer"].iloc[i]), choices_of(df.iloc[i])) for i in keep}
        lengths = [len(ids) for ids in chat_ids]
        for cfg in cfgs:
            apply_swaa(model, cfg)
            setting_fp = _setting_fingerprint(cfg, engine, model, opts)
            stem = f"{unit}/{cfg.mark}-{setting_fp[:8]}"
            files = dict(rows=f"rows/{stem}.jsonl", parquet=f"{stem}.parquet")     # relative to OUT
            store = ResultStore(out / files["rows"])
            keys = {i: f"{model_fp}-{setting_fp}-{content[i]}" for i in keep}
            todo = [i for i in keep if keys[i] not in store]
            bar = tqdm(total=len(keep), initial=len(keep) - len(todo), desc=f"{name} {cfg.mark}", disable=not progress)
            generate = (_hf_generator(model, tok, chat, opts) if engine == "hf" or not todo else
                        _vllm_generator(model_id, cfg, chat_ids, p.max_model_len(opts.max_new_tokens), opts))
            step = opts.batch_size if engine == "hf" else max(opts.batch_size, 16)   # vLLM batches on its own
            for start in range(0, len(todo), step):
                batch = todo[start:start + step]
                t0 = time.perf_counter()
                responses = generate(batch)
                seconds = (time.perf_counter() - t0) / len(batch)
                for i, response in zip(batch, responses):
                    row = df.iloc[i]
                    choices = choices_of(row)
                    rec = dict(key=keys[i], id=str(row["id"]), task=row.get("task"), **group_fields(row),
                               prompt_tokens=lengths[i], response=response, answer=str(row["answer"]),
                               choices=choices, seconds=round(seconds, 3),
                               **score_response(response, str(row["answer"]), choices))
                    if opts.answer_nll:
                        a_ids = tok(str(row["answer"]), add_special_tokens=False)["input_ids"]
                        rec.update(answer_nll(model, chat_ids[i], a_ids))
                    store.add(rec)
                bar.update(len(batch))
            generate = None                       # a vLLM engine is shut down before the next setting starts
            bar.close()
            rows = pd.DataFrame([dict(store[keys[i]], id=str(df["id"].iloc[i])) for i in keep])
            if judge is not None:
                grades = [judge.grade(str(df["question"].iloc[i]), str(df["answer"].iloc[i]), r)
                          for i, r in zip(keep, rows["response"])]
                rows["judge_score"] = [g["judge_score"] for g in grades]
                rows["judge_raw"] = [g["judge_raw"] for g in grades]
            _atomic_parquet(rows, out / files["parquet"])
            metrics = cell(rows, METRICS)                 # n, and each metric's mean with its 95% interval
            if "task" in rows and rows["task"].notna().any():
                metrics["by_task"] = {t: cell(g, METRICS) for t, g in rows.groupby("task")}
            summary = dict(key=f"{name}|{model_fp}|{cfg.mark}|{setting_fp}", model_name=name,
                           model_fingerprint=model_fp, use_vllm=engine == "vllm", mark=cfg.mark, **cfg.to_dict(),
                           setting_fingerprint=setting_fp, **files, skipped_too_long=len(df) - len(keep),
                           truncated=p.truncated, **metrics)
            _append_summary(out / "results.jsonl", summary)
            summaries.append(summary)
        apply_swaa(model, None)
    return summaries


def _hf_generator(model, tok, chat, opts: EvalOptions):
    """Greedy batched generation with transformers (left padding); returns decoded responses."""
    import torch

    def generate(batch):
        enc = tok([chat[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=opts.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        return [tok.decode(gen[j, enc["input_ids"].shape[1]:], skip_special_tokens=True) for j in range(len(batch))]
    return generate


def _vllm_generator(model_id, cfg: SWAAConfig, chat_ids, max_model_len: int, opts: EvalOptions):
    """Greedy generation with vLLM and the SWAA plugin: one engine for this setting, fed by batches."""
    from ..integrations.vllm.offline import engine_for
    from ..models import default_model_path

    llm = engine_for(str(default_model_path() if model_id is None else model_id), cfg, device=opts.device,
                     max_model_len=max_model_len, **(opts.vllm_kwargs or {}))
    from vllm import SamplingParams
    sp = SamplingParams(max_tokens=opts.max_new_tokens, temperature=0.0)

    def generate(batch):
        outs = llm.generate([{"prompt_token_ids": chat_ids[i]} for i in batch], sp, use_tqdm=False)
        return [o.outputs[0].text for o in outs]
    return generate
