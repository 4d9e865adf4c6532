"""Next-token loss of a text under SWAA configurations (the sink effect, interleaving, windows) on any model, and the
window x sinks loss grid of notebook 01 (resumable)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import SWAAConfig
from ..integrations.transformers import apply_swaa

__all__ = ["mean_loss", "token_losses", "loss_grid_configs", "run_loss_grid"]


@torch.no_grad()
def token_losses(model, input_ids: torch.Tensor, cfg: SWAAConfig | dict | None = None) -> torch.Tensor:
    """Per-token next-token loss (B, L-1) of ``input_ids`` under ``cfg`` (None: the model's current setting).

    Every token is a prompt token here (one forward, no labels passed to the model), so the window applies
    everywhere, whatever ``force_fa_decode`` says.
    """
    if cfg is not None:
        apply_swaa(model, cfg)
    ids = input_ids.to(model.device)
    logits = model(ids, use_cache=False).logits.float()
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")


def mean_loss(model, input_ids: torch.Tensor, cfg: SWAAConfig | dict | None = None, skip: int = 0) -> float:
    """Mean next-token loss, ignoring the first ``skip`` predictions (e.g. those the window covers anyway)."""
    return token_losses(model, input_ids, cfg)[:, skip:].mean().item()


def loss_grid_configs(windows=(16, 32, 64, 128, 256, 512), sinks=(0, 1, 4, 16)) -> list[SWAAConfig]:
    return [SWAAConfig()] + [SWAAConfig(sliding_window_size=w, keep_first=s) for w in windows for s in sinks]


def run_loss_grid(model, tok, configs, *, n_tokens: int = 1536, source: str = "gpl3", model_name: str = "default",
                  results: Path, progress: bool = True) -> list[dict]:
    """Mean loss of an offline text under each config, resumable in ``results`` (JSONL)."""
    from ..evaluation.data import offline_token_ids
    from ..store.fingerprint import model_fingerprint
    from ..store.rows import run_resumable

    ids = offline_token_ids(tok, n_tokens, source)

    def compute(cfg):
        t0 = time.perf_counter()
        loss = mean_loss(model, ids, cfg)
        return dict(model=model_name, mark=cfg.mark, window=cfg.sliding_window_size, keep_first=cfg.keep_first,
                    non_sliding=len(cfg.non_sliding_layers), swaa_config=cfg.to_dict(), n_tokens=n_tokens,
                    source=source, loss=loss, seconds=round(time.perf_counter() - t0, 2))

    fp = model_fingerprint(model)
    return run_resumable(results, configs, key=lambda c: f"{fp}|{n_tokens}|{source}|{c.to_json()}",
                         compute=compute, progress=progress, desc="loss grid")
