"""Scoring: rule-based metrics on generated text, and answer NLL from the model itself.

Rule metrics see the response with any ``<think>...</think>`` block removed (thinking models are scored on their
answer; the thinking stays in the stored output). Answer NLL is the negative log-likelihood of the reference answer
given the prompt, computed with ``prompt_length`` so that FA decode applies to the answer tokens exactly as during
generation; it gives a clean signal even for a 135M model.
"""
from __future__ import annotations

import re
import string
from collections import Counter

__all__ = ["strip_thinking", "normalize", "exact_match", "contains", "token_f1", "choice_letter", "choice_correct",
           "score_response", "choices_of", "answer_nll"]

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def strip_thinking(text: str) -> str:
    """The response without its thinking: ``<think>...</think>`` blocks removed; an unclosed ``<think>`` (the
    model ran out of tokens while thinking) leaves no answer; a lone ``</think>`` (templates that open the block
    in the prompt) keeps what follows it."""
    text = _THINK.sub("", text)
    low = text.lower()
    if "</think>" in low:
        text = text[low.rindex("</think>") + len("</think>"):]
    elif "<think>" in low:
        text = text[:low.index("<think>")]
    return text.strip()


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(response: str, answer: str) -> float:
    return float(normalize(strip_thinking(response)) == normalize(answer))


def contains(response: str, answer: str) -> float:
    """1 when the normalised answer occurs in the normalised response (the usual needle metric)."""
    a = normalize(answer)
    return float(bool(a) and a in normalize(strip_thinking(response)))


def token_f1(response: str, answer: str) -> float:
    pred, gold = normalize(strip_thinking(response)).split(), normalize(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


_LETTER_PATTERNS = [
    r"answer\s*(?:is|:)?\s*\(?\**([A-D])\b",          # "The answer is (B)", "Answer: C", "answer is **D**"
    r"^\s*\(?([A-D])[\).:]?\s*$",                     # a bare letter
    r"^\s*\(?([A-D])[\).:]",                          # "B. text", "(C) text"
    r"\(([A-D])\)",                                    # "(A)" anywhere
    r"\b([A-D])\b",                                    # first standalone capital letter A-D
]


# LongBench v2's answer format, as the paper's scoring reads it (Eval/gpt_eval.py): its last occurrence wins
_STATED = re.compile(r"The correct answer is \(?([A-D])\b")


def choice_letter(response: str) -> str | None:
    """The chosen letter of a multiple-choice answer, or None: the last "The correct answer is (X)" (LongBench v2's
    format, read as the paper reads it), else the first of the looser forms above."""
    text = strip_thinking(response).replace("*", "")
    stated = _STATED.findall(text)
    if stated:
        return stated[-1]
    for pat in _LETTER_PATTERNS:
        m = re.search(pat, text, re.IGNORECASE | re.MULTILINE) if pat.startswith("answer") else \
            re.search(pat, text, re.MULTILINE)
        if m:
            return m.group(1).upper()
    return None


def choice_correct(response: str, answer: str) -> float:
    return float(choice_letter(response) == answer.strip().upper())


def score_response(response: str, answer: str, choices=None) -> dict:
    """All rule metrics of one response (multiple-choice rows are scored by their letter)."""
    if choices is not None and len(choices):
        c = choice_correct(response, answer)
        return dict(exact_match=c, contains=c, token_f1=c, choice=choice_letter(response))
    return dict(exact_match=exact_match(response, answer), contains=contains(response, answer),
                token_f1=token_f1(response, answer))


def choices_of(row) -> list | None:
    """A dataset row's multiple-choice options as a list, or None (a missing value reads as NaN or a string)."""
    c = row.get("choices")
    return list(c) if c is not None and not isinstance(c, (str, float)) else None


def answer_nll(model, prompt_ids, answer_ids) -> dict:
    """NLL of ``answer_ids`` given ``prompt_ids`` (1-D token lists or tensors) under the model's current SWAA config.

    One forward over prompt + answer with ``prompt_length = len(prompt)``: prompt tokens under SWA, answer tokens
    under full attention where FA decode applies, the same split a generation would make. Returns the summed and
    per-token mean NLL (nats) and the number of answer tokens.
    """
    import torch
    import torch.nn.functional as F

    p = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
    a = torch.as_tensor(answer_ids, dtype=torch.long).flatten()
    if p.numel() == 0 or a.numel() == 0:
        raise ValueError(f"answer_nll needs a non-empty prompt and answer (got {p.numel()} and {a.numel()} tokens)")
    ids = torch.cat([p, a])[None].to(model.device)
    with torch.no_grad():              # the LM head only where the answer is predicted: the last len(a) + 1 positions
        logits = model(ids, prompt_length=p.numel(), use_cache=False, logits_to_keep=a.numel() + 1).logits[0].float()
    nll = F.cross_entropy(logits[:-1], ids[0, p.numel():], reduction="sum").item()
    return dict(answer_nll=nll, answer_nll_mean=nll / a.numel(), answer_tokens=int(a.numel()))
