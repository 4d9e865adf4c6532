"""Chat prompts for generation: the chat template, token counts, the length filter and the model's context length.

    p = chat_prompts(tok, df["prompt"], ids=df["id"], cot=False, max_prompt_tokens=None,
                     max_positions=max_positions(model.config), reserve=max_new_tokens, truncate=False)
    p.text[i], p.chat[i], p.ids[i], p.keep, p.truncated

A prompt longer than ``max_prompt_tokens`` (chat template included) is skipped (``keep`` lists the rest; none left is
an error). A kept prompt that with ``reserve`` generated tokens does not fit in the model's maximum positions
(``max_position_embeddings``) is refused, naming its row and the lengths; with ``truncate=True`` it is cut in the
middle instead, keeping its first and last tokens, as LongBench's prediction code does (its tokens ``[:half]`` and
``[-half:]`` decoded and joined); the chat template and the CoT suffix stay whole.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COT_SUFFIX", "PromptSet", "chat_prompts", "max_positions"]

COT_SUFFIX = "\n\nThink step by step, then give the final answer."


def max_positions(config) -> int | None:
    """The model's maximum positions (its text config's ``max_position_embeddings``), None when it has none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


@dataclass
class PromptSet:
    text: list[str]             # each row's prompt (truncated where it was), without template and suffix
    chat: list[str]             # its chat-formatted prompt
    ids: list[list[int]]        # its token ids
    keep: list[int]             # rows within max_prompt_tokens
    truncated: int              # rows cut to fit the model
    max_positions: int | None   # the model's, when known

    def max_model_len(self, new_tokens: int) -> int:
        """Room for the longest kept prompt and ``new_tokens`` (an engine's max_model_len), within the model's."""
        n = max(len(self.ids[i]) for i in self.keep) + new_tokens + 16
        return n if self.max_positions is None else min(n, self.max_positions)


def _chat(tok, text: str) -> tuple[str, list[int]]:
    chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return chat, tok(chat, add_special_tokens=False)["input_ids"]


def _middle(tok, text: str, n: int) -> str:
    """The first and last tokens of ``text``, ``n`` in all (LongBench's middle truncation)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    head = n // 2
    return tok.decode(ids[:head]) + tok.decode(ids[len(ids) - (n - head):])


def chat_prompts(tok, prompts, *, ids=None, cot: bool = False, max_prompt_tokens: int | None = None,
                 max_positions: int | None = None, reserve: int = 0, truncate: bool = False) -> PromptSet:
    """Chat-format ``prompts`` (each the user turn, with the CoT suffix when ``cot``); see the module docstring.
    ``ids`` name the rows in errors (default: their index)."""
    suffix = COT_SUFFIX if cot else ""
    prompts = [str(p) for p in prompts]
    names = list(ids) if ids is not None else list(range(len(prompts)))
    chats, tokens = map(list, zip(*(_chat(tok, p + suffix) for p in prompts))) if prompts else ([], [])
    keep = [i for i, t in enumerate(tokens) if max_prompt_tokens is None or len(t) <= max_prompt_tokens]
    if prompts and not keep:
        raise ValueError(f"all {len(prompts)} prompts are longer than max_prompt_tokens={max_prompt_tokens} "
                         f"(shortest {min(map(len, tokens))} tokens); raise the limit or use shorter data")
    limit = None if max_positions is None else max_positions - reserve
    truncated = 0
    for i in keep:
        n = len(tokens[i])
        if limit is None or n <= limit:
            continue
        if not truncate:
            raise ValueError(f"row {names[i]!r}: its prompt is {n} tokens (chat template included) and {reserve} more "
                             f"are generated, beyond the model's {max_positions} positions (max_position_embeddings); "
                             "pass truncate_prompts=True to keep its start and end (LongBench's middle truncation), "
                             "or skip long rows with max_prompt_tokens")
        whole = prompts[i]
        overhead = n - len(tok(whole, add_special_tokens=False)["input_ids"])         # template and suffix
        budget = limit - overhead
        for _ in range(4):                  # decoding and encoding again can merge tokens at the cut: shrink to fit
            if budget < 1:
                break
            prompts[i] = _middle(tok, whole, budget)
            chats[i], tokens[i] = _chat(tok, prompts[i] + suffix)
            if len(tokens[i]) <= limit:
                break
            budget -= len(tokens[i]) - limit
        if budget < 1 or len(tokens[i]) > limit:
            raise ValueError(f"row {names[i]!r}: the chat template takes {overhead} tokens and {reserve} are generated"
                             f", which leaves no room for the prompt in the model's {max_positions} positions; "
                             "generate fewer tokens")
        truncated += 1
    return PromptSet(text=prompts, chat=chats, ids=tokens, keep=keep, truncated=truncated, max_positions=max_positions)
