"""Optional LLM judge over any OpenAI-compatible endpoint (the paper used GPT-4o): timeouts, retries, a cache.

    judge = Judge(base_url="http://127.0.0.1:8000/v1", model="my-judge")   # or SWAA_JUDGE_URL / SWAA_JUDGE_MODEL
    judge.grade(question, reference_answer, response)  ->  {"judge_score": 1.0, "judge_raw": "CORRECT"}

The API key comes from ``SWAA_JUDGE_API_KEY`` or ``OPENAI_API_KEY`` (local servers accept any). Grades are cached in a
JSONL file keyed by (model, question, answer, response), so a rerun asks nothing twice.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..store.rows import ResultStore
from .scoring import strip_thinking

__all__ = ["Judge", "JudgeError", "JUDGE_PROMPT"]

JUDGE_PROMPT = """You are grading an answer to a question about a long document.
Question: {question}
Reference answer: {answer}
Candidate answer: {response}
Is the candidate answer correct, i.e. does it state the reference answer? Reply with exactly one word: CORRECT or INCORRECT."""


class JudgeError(RuntimeError):
    pass


class Judge:
    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 3, cache_path: str | Path | None = None):
        self.base_url = base_url or os.environ.get("SWAA_JUDGE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.model = model or os.environ.get("SWAA_JUDGE_MODEL")
        if not self.base_url or not self.model:
            raise ValueError("the judge needs a base URL and a model: pass base_url=/model= or set SWAA_JUDGE_URL and "
                             "SWAA_JUDGE_MODEL (any OpenAI-compatible server, e.g. `swaa serve` or `vllm serve`)")
        key = api_key or os.environ.get("SWAA_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        from openai import OpenAI
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        self.retries = retries
        self.cache = ResultStore(cache_path) if cache_path else None
        self.calls = 0

    def check(self, timeout: float = 10.0) -> None:
        """One quick request for the served models, before a run relies on the judge: JudgeError when nothing
        answers at the URL or the model is not among those served (a server without the listing is taken as is)."""
        import openai
        try:
            served = [m.id for m in self.client.with_options(timeout=timeout).models.list().data]
        except openai.NotFoundError:
            return
        except openai.OpenAIError as e:
            raise JudgeError(f"the judge at {self.base_url} does not answer ({type(e).__name__}: {e})") from None
        if served and self.model not in served:
            raise JudgeError(f"the judge at {self.base_url} does not serve model {self.model!r} (it serves "
                             f"{served[:8]})")

    def _key(self, question, answer, response) -> str:
        return hashlib.sha256("\x1f".join((self.model, question, answer, response)).encode()).hexdigest()[:24]

    def grade(self, question: str, answer: str, response: str) -> dict:
        response = strip_thinking(response)
        key = self._key(question, answer, response)
        if self.cache is not None and key in self.cache:
            row = self.cache[key]
            return dict(judge_score=row["judge_score"], judge_raw=row["judge_raw"])
        prompt = JUDGE_PROMPT.format(question=question, answer=answer, response=response)
        last = None
        for attempt in range(self.retries + 1):
            try:
                self.calls += 1
                out = self.client.chat.completions.create(model=self.model, temperature=0.0, max_tokens=8,
                                                          messages=[{"role": "user", "content": prompt}])
                raw = (out.choices[0].message.content or "").strip()
                break
            except Exception as e:  # connection errors, timeouts, 5xx: retry with backoff
                last = e
                if attempt < self.retries:
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
        else:
            raise JudgeError(f"the judge at {self.base_url} (model {self.model!r}) did not answer after "
                             f"{self.retries + 1} attempts: {type(last).__name__}: {last}") from last
        up = raw.upper()
        score = 0.0 if "INCORRECT" in up else (1.0 if "CORRECT" in up else 0.0)
        if self.cache is not None:
            self.cache.add(dict(key=key, judge_score=score, judge_raw=raw))
        return dict(judge_score=score, judge_raw=raw)
