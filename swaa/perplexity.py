"""Next-token loss of a text under SWAA configurations (the sink effect, interleaving, windows) on any model."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import SWAAConfig
from .integrations.transformers import apply_swaa

__all__ = ["mean_loss", "token_losses"]


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
