"""Self-distillation: the full-attention model answers long prompts; answers matching the reference are SFT data.

    rows = self_distill(model, tok, dataset, out="out/distill", n=4)     # one stored row per prompt, resumable
    data = select_distilled(rows)                                        # DataFrame: prompt, response, ...

For every prompt, ``n`` answers are sampled from the model under full attention (whatever SWAA config it carried
is put back afterwards), each is scored against the reference answer by rule (:func:`swaa.evaluation.scoring.score_response`)
or by an LLM judge (:class:`swaa.evaluation.judge.Judge`), and the prompt's row (all answers and their scores) is appended to
``OUT/distill.jsonl`` as soon as it is finished, keyed by the model's fingerprint, the sampling settings and the
prompt's content (chat prompt, question, answer, choices). A rerun, after a crash or Ctrl-C, reuses every finished
prompt; another dataset, model or setting in the same folder finds only its own rows. Prompts are sampled in
batches fixed by the data (not by what is left) and each batch is seeded from its first prompt's key, so an
interrupted and resumed run gives the rows of an uninterrupted one.
``select_distilled`` keeps the answers whose score reaches ``threshold`` (the paper kept the judge-approved ones).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..store.fingerprint import fingerprint, model_fingerprint

__all__ = ["generate_samples", "self_distill", "select_distilled", "teacher_llm", "ENGINES"]

ENGINES = ("hf", "vllm")


def _seed_for(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:8], 16)


def _check_sampling(engine: str, n: int, temperature: float, top_p: float) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}")
    if n < 1:
        raise ValueError(f"n={n}: self-distillation needs at least one sample per prompt")
    if temperature < 0 or (temperature == 0 and n != 1):
        raise ValueError(f"temperature={temperature} with n={n}: use temperature > 0 to sample several answers, "
                         "or temperature=0 (greedy) with n=1")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: nucleus sampling keeps a fraction of the probability mass, in (0, 1]")


def generate_samples(model, tok, chat_texts: list[str], *, engine: str = "hf", n: int = 4, temperature: float = 0.7,
                     top_p: float = 0.95, max_new_tokens: int = 48, seed: int = 0, llm=None) -> list[list[str]]:
    """``n`` sampled answers to each chat-formatted prompt (one batch; HF pads on the left). ``temperature=0``
    means greedy, one answer. The one place that knows about generation engines: ``engine="vllm"`` samples with
    the vLLM engine ``llm`` (see :func:`teacher_llm`), each prompt with its own seed ``seed + i``."""
    _check_sampling(engine, n, temperature, top_p)
    if engine == "vllm":
        if llm is None:
            raise ValueError("engine='vllm' needs the teacher's vLLM engine: pass llm=teacher_llm(model_path, ...) "
                             "(self_distill makes one)")
        from vllm import SamplingParams
        ids = [tok(c, add_special_tokens=False)["input_ids"] for c in chat_texts]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                 max_tokens=max_new_tokens, seed=seed + i) for i in range(len(ids))]
        outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        return [[o.text.strip() for o in out.outputs] for out in outs]
    import torch

    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(list(chat_texts), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tok.padding_side = side
    torch.manual_seed(seed)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    with torch.no_grad():
        gen = model.generate(**enc, num_return_sequences=n, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, **sampling)
    start = enc["input_ids"].shape[1]
    texts = [tok.decode(g[start:], skip_special_tokens=True).strip() for g in gen]
    return [texts[i * n:(i + 1) * n] for i in range(len(chat_texts))]


def teacher_llm(model, max_model_len: int, seed: int = 0, **vllm_kwargs):
    """The vLLM engine for self-distillation: the model's weights on disk (``model.name_or_path``) under full
    attention (no SWAA config), fp32 on CPU as the HF model there."""
    from ..integrations.vllm.offline import engine_for
    path = str(getattr(model, "name_or_path", "") or "")
    if not path or not Path(path).exists():
        raise ValueError(f"engine='vllm' loads the teacher from disk, but the model's name_or_path {path!r} is not a "
                         "local folder: save the model (model.save_pretrained(DIR)) and load it from DIR, or use "
                         "engine='hf'")
    return engine_for(path, None, device=model.device.type, max_model_len=max_model_len, seed=seed, **vllm_kwargs)


def _score(response: str, row, judge) -> float:
    from ..evaluation.scoring import choices_of, score_response
    if judge is not None:
        return float(judge.grade(str(row["question"]), str(row["answer"]), response)["judge_score"])
    return float(score_response(response, str(row["answer"]), choices_of(row))["contains"])


def self_distill(model, tok, dataset, out, *, n: int = 4, engine: str = "hf", temperature: float = 0.7,
                 top_p: float = 0.95, max_new_tokens: int = 48, seed: int = 0, judge=None,
                 max_prompt_tokens: int | None = None, truncate_prompts: bool = False, batch_size: int = 4,
                 progress: bool = True, vllm_kwargs: dict | None = None) -> list[dict]:
    """Sample ``n`` answers per prompt of ``dataset`` (DataFrame or path with prompt/question/answer) under full
    attention and score them; rows go to ``OUT/distill.jsonl`` as they finish. Returns one row per prompt:
    ``id, prompt, question, answer, task, prompt_tokens, responses, scores``.

    ``engine``: "hf" (``model.generate``) or "vllm" (one vLLM engine on the model's folder, started only if a
    prompt is left to sample; ``vllm_kwargs`` go to it). ``batch_size`` prompts are sampled together. Scores are the rule metric ``contains`` (for
    multiple-choice rows, the chosen letter), or ``judge_score`` when ``judge`` is given. Prompts longer than
    ``max_prompt_tokens`` (chat template included) are skipped and counted; a prompt beyond the model's maximum
    positions is refused, or with ``truncate_prompts`` cut in the middle (:mod:`swaa.evaluation.prompts`; the row keeps the
    prompt the model answered).
    """
    import pandas as pd

    from ..evaluation.data import load_dataset, validate_dataset
    from ..integrations.transformers import apply_swaa, get_swaa_config
    from ..evaluation.prompts import chat_prompts, max_positions
    from ..store.rows import ResultStore
    from ..evaluation.scoring import choices_of

    _check_sampling(engine, n, temperature, top_p)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: use an int >= 1")
    df = dataset if isinstance(dataset, pd.DataFrame) else load_dataset(dataset)
    df = validate_dataset(df, "the self-distillation dataset")
    if "id" not in df.columns:
        df = df.assign(id=[f"row{i}" for i in range(len(df))])
    settings = dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                    engine=engine, scorer="judge:" + judge.model if judge is not None else "contains",
                    vllm_kwargs=vllm_kwargs if engine == "vllm" else None)
    fp = f"{model_fingerprint(model)}-{fingerprint(settings)}"
    p = chat_prompts(tok, df["prompt"], ids=df["id"], max_prompt_tokens=max_prompt_tokens,
                     max_positions=max_positions(model.config), reserve=max_new_tokens, truncate=truncate_prompts)
    chats, n_tok, keep = p.chat, [len(x) for x in p.ids], p.keep
    skipped = len(df) - len(keep)
    out = Path(out)
    store = ResultStore(out / "distill.jsonl")
    previous = get_swaa_config(model.config)
    apply_swaa(model, None)                         # the teacher is the model under full attention
    content = {i: fingerprint(chats[i], str(df["question"].iloc[i]), str(df["answer"].iloc[i]),
                              choices_of(df.iloc[i])) for i in keep}
    keys = {i: f"{fp}-{content[i]}" for i in keep}
    # batches are fixed by the data, not by what is left, so a resumed run samples exactly what a full run would
    batches = [keep[s:s + batch_size] for s in range(0, len(keep), batch_size)]
    llm = None
    try:
        from tqdm.auto import tqdm
        for batch in tqdm(batches, desc="self-distill", disable=not progress):
            todo = [i for i in batch if keys[i] not in store]
            if not todo:
                continue
            if engine == "vllm" and llm is None:
                llm = teacher_llm(model, p.max_model_len(max_new_tokens), seed=seed, **(vllm_kwargs or {}))
            samples = generate_samples(model, tok, [chats[i] for i in batch], engine=engine, n=n,
                                       temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                       seed=_seed_for(seed, keys[batch[0]]), llm=llm)
            for i, responses in zip(batch, samples):
                if i in todo:
                    row = df.iloc[i]
                    store.add(dict(key=keys[i], id=str(row["id"]), prompt=p.text[i],
                                   question=str(row["question"]), answer=str(row["answer"]), task=row.get("task"),
                                   prompt_tokens=n_tok[i], responses=responses,
                                   scores=[_score(r, row, judge) for r in responses]))
    finally:
        apply_swaa(model, previous)
    rows = [dict(store[keys[i]], id=str(df["id"].iloc[i])) for i in keep]
    if skipped and progress:
        print(f"self-distill: skipped {skipped} of {len(df)} prompts longer than {max_prompt_tokens} tokens")
    if p.truncated and progress:
        print(f"self-distill: truncated {p.truncated} of {len(df)} prompts in the middle to fit the model's "
              f"{p.max_positions} positions")
    return rows


def select_distilled(rows: list[dict], *, threshold: float = 1.0, per_prompt: int | None = 1):
    """The SFT data: per prompt, up to ``per_prompt`` distinct answers scoring at least ``threshold`` (None = all).

    Returns a DataFrame with ``id, prompt, question, answer, task, response, score``; ``df.attrs`` holds the counts
    (prompts, samples, kept, prompts_without_a_kept_answer)."""
    import pandas as pd

    if not rows:
        raise ValueError("no self-distilled rows to select from: run self_distill on a non-empty dataset first")
    kept, empty = [], 0
    for r in rows:
        seen = []
        for resp, score in zip(r["responses"], r["scores"]):
            if score >= threshold and resp.strip() and resp not in seen:
                seen.append(resp)
                kept.append(dict(id=r["id"], prompt=r["prompt"], question=r["question"], answer=r["answer"],
                                 task=r.get("task"), response=resp, score=score))
                if per_prompt is not None and len(seen) >= per_prompt:
                    break
        empty += not seen
    df = pd.DataFrame(kept, columns=["id", "prompt", "question", "answer", "task", "response", "score"])
    df.attrs.update(prompts=len(rows), samples=sum(len(r["responses"]) for r in rows), kept=len(df),
                    prompts_without_a_kept_answer=empty)
    return df
