"""SFT data: chat-template encoding with the assistant-token mask, a max-length filter, length-grouped batches.

One example is ``input_ids = prompt_ids + answer_ids`` and ``labels = [-100] * len(prompt_ids) + answer_ids``:

    prompt_ids  the chat template's own rendering of the user turn with the generation prompt (system prompt and
                assistant header included), tokenized alone - exactly the tokens a generation starts from
    answer_ids  the rest of the template's rendering of the full conversation (the answer and its end-of-turn
                token; trailing whitespace after it dropped)

so every prompt token is masked and the leading ``-100`` run is the prompt length that FA decode needs
(:func:`swaa.integrations.transformers.prompt_length_from_labels`). Batches are right-padded (labels -100, attention
mask 0 on padding).
"""
from __future__ import annotations

import random

__all__ = ["encode_example", "encode_dataset", "length_grouped_batches", "collate", "IGNORE_INDEX"]

IGNORE_INDEX = -100


def encode_example(tok, prompt: str, response: str) -> dict:
    """``{"input_ids", "labels"}`` (lists of ints) for one (user prompt, assistant response) pair."""
    user = [{"role": "user", "content": prompt}]
    prompt_text = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full_text = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(f"the chat template of {type(tok).__name__} does not render the conversation as the prompt "
                         "(with add_generation_prompt=True) followed by the answer, so the assistant tokens cannot be "
                         "located; use a template without per-turn rewriting of earlier messages")
    answer_text = full_text[len(prompt_text):].rstrip()
    p = tok(prompt_text, add_special_tokens=False)["input_ids"]
    a = tok(answer_text, add_special_tokens=False)["input_ids"]
    if not a:
        raise ValueError(f"empty response for prompt {prompt[:60]!r}...: nothing to train on")
    return dict(input_ids=p + a, labels=[IGNORE_INDEX] * len(p) + a)


def encode_dataset(tok, data, *, max_length: int | None = 2048, response_column: str = "response",
                   progress: bool = False) -> tuple[list[dict], dict]:
    """Encode a DataFrame (or list of dicts) with ``prompt`` and ``response_column``.

    Returns ``(examples, report)``; examples longer than ``max_length`` tokens are dropped and counted in
    ``report["dropped_too_long"]``."""
    import pandas as pd

    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    if len(df) == 0:
        raise ValueError("the SFT dataset is empty (0 rows); run self-distillation (swaa distill) or pass rows with "
                         f"'prompt' and {response_column!r}")
    missing = [c for c in ("prompt", response_column) if c not in df.columns]
    if missing:
        hint = (" (to train on the reference answers instead, pass response_column='answer')"
                if "answer" in df.columns and response_column not in df.columns else "")
        raise ValueError(f"the SFT dataset lacks columns {missing}: found {list(df.columns)}{hint}")
    examples, lengths = [], []
    from tqdm.auto import tqdm
    for prompt, response in tqdm(zip(df["prompt"], df[response_column]), total=len(df), disable=not progress,
                                 desc="encode"):
        ex = encode_example(tok, str(prompt), str(response))
        lengths.append(len(ex["input_ids"]))
        if max_length is None or lengths[-1] <= max_length:
            examples.append(ex)
    dropped = len(df) - len(examples)
    if not examples:
        raise ValueError(f"all {len(df)} examples are longer than max_length={max_length} tokens (shortest "
                         f"{min(lengths)}); raise max_length or use shorter prompts")
    return examples, dict(rows=len(df), kept=len(examples), dropped_too_long=dropped,
                          max_tokens=max(len(e["input_ids"]) for e in examples))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int = 0,
                           group: int = 8) -> list[list[int]]:
    """Indices in batches of similar length: shuffle (seed, epoch), sort within chunks of ``group`` batches by
    length, cut into batches, shuffle the batches. Little padding, still a random order; deterministic."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    rng = random.Random(f"{seed}|{epoch}")
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * group
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: -lengths[i])
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict], pad_token_id: int):
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (B, L) LongTensors."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[r, :n] = torch.tensor(e["input_ids"])
        labels[r, :n] = torch.tensor(e["labels"])
        mask[r, :n] = 1
    return dict(input_ids=ids, attention_mask=mask, labels=labels)
