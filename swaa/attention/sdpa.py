"""SDPA backend: torch's scaled_dot_product_attention with a boolean SWAA mask (CPU default; has backward).

Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D) -> (B, Hq, Lq, D). GQA through ``enable_gqa``.
"""
from __future__ import annotations

import torch.nn.functional as F

from .masks import dense_mask


def sdpa_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if return_lse:
        return "torch SDPA does not return the log-sum-exp; use backend='reference' or 'flex'"
    return None


def sdpa_attention(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from):
    lq, lk = q.shape[-2], k.shape[-2]
    if window is None and mask is None and lq == lk:
        # plain causal: let SDPA pick its fused causal kernel, no mask tensor at all
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])
    allowed = dense_mask(lq, lk, window, keep_first, base=mask, fa_from=fa_from, device=q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[1])
    # a query that sees no key (left of the first key when Lq > Lk, or a padded query) -> zeros, not NaN. Without a
    # base mask and with Lq <= Lk every query sees its own position, so no row is empty. No host sync either way
    # (a CUDA graph can capture this).
    if mask is not None or lq > lk:
        out = out.masked_fill(~allowed.any(-1, keepdim=True), 0.0)                  # (B|1, 1, Lq, 1)
    return out
