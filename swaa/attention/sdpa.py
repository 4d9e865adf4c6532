"""SDPA backend: torch's scaled_dot_product_attention, with no mask where the rule allows one (CPU default; has
backward).

Where every query sees one contiguous run of keys under causal alignment, SDPA gets no mask tensor and picks its
fused kernels: full attention (``is_causal``, or a lower-right causal bias when the queries are the last of longer
keys), and one decode query whose sinks touch its window (or that has none) over a view of the visible keys.
Otherwise a boolean (B|1, 1, Lq, Lk) SWAA mask goes in.

Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D) -> (B, Hq, Lq, D). GQA through ``enable_gqa``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from .masks import dense_mask


def sdpa_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if return_lse:
        return "torch SDPA does not return the log-sum-exp; use backend='reference' or 'flex'"
    return None


def one_query_span(lk: int, window, keep_first: int) -> int | None:
    """The first key one query at position ``lk - 1`` sees when its visible keys are the one run ``[start, lk)``
    (no sinks apart from the window), else None."""
    if window is None:
        return 0
    lo = max(0, lk - window)
    if keep_first == 0:
        return lo
    return 0 if keep_first >= lo else None            # the sinks reach the window: one run from key 0


def sdpa_attention(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from):
    lq, lk = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None and fa_from is None:
        if window is None and lq == lk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        if window is None and lq < lk:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(lq, lk), scale=scale,
                                                  enable_gqa=gqa)
        start = one_query_span(lk, window, keep_first) if lq == 1 else None
        if start is not None:
            return F.scaled_dot_product_attention(q, k[:, :, start:], v[:, :, start:], scale=scale, enable_gqa=gqa)
    allowed = dense_mask(lq, lk, window, keep_first, base=mask, fa_from=fa_from, device=q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=gqa)
    # a query that sees no key (left of the first key when Lq > Lk, or a padded query) -> zeros, not NaN. Without a
    # base mask and with Lq <= Lk every query sees its own position, so no row is empty. No host sync either way
    # (a CUDA graph can capture this).
    if mask is not None or lq > lk:
        out = out.masked_fill(~allowed.any(-1, keepdim=True), 0.0)                  # (B|1, 1, Lq, 1)
    return out
