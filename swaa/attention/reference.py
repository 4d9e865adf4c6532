"""attention_ref: dense SWAA attention in plain PyTorch, the ground truth every backend is tested against.

Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D), Hq % Hkv == 0 (GQA: query head h reads KV head h // (Hq/Hkv)).
Output (B, Hq, Lq, D); LSE (B, Hq, Lq) in natural log, fp32. A query that sees no key gets zeros and LSE -inf.
"""
from __future__ import annotations

import math

import torch

from .masks import dense_mask

__all__ = ["attention_ref", "attention_weights_ref", "repeat_kv", "merge_attention"]


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, L, D) -> (B, Hkv * groups, L, D), each KV head repeated for its query heads."""
    if groups == 1:
        return x
    b, h, l, d = x.shape
    return x[:, :, None].expand(b, h, groups, l, d).reshape(b, h * groups, l, d)


def attention_weights_ref(q, k, *, sliding_window_size=None, keep_first=0, scale=None, mask=None, fa_from=None,
                          upcast=True) -> torch.Tensor:
    """Attention probabilities (B, Hq, Lq, Lk) under the SWAA rule; rows that see no key are all zeros."""
    if upcast:
        q, k = q.float(), k.float()
    lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k = repeat_kv(k, q.shape[1] // k.shape[1])
    allowed = dense_mask(lq, lk, sliding_window_size, keep_first, base=mask, fa_from=fa_from, device=q.device)
    scores = torch.matmul(q * scale, k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))   # (B, H, Lq, Lk)
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0), scores


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    sliding_window_size: int | None = None,
    keep_first: int = 0,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
    fa_from=None,
    upcast: bool = True,
    return_lse: bool = False,
):
    """Dense attention under the SWAA rule (see ``swaa.attention.masks``).

    ``upcast=True`` computes in fp32 (the reference); ``upcast=False`` computes in the input dtype, which
    measures PyTorch's own low-precision error (tests allow a backend twice that error).
    ``mask``/``fa_from``: see :func:`swaa.attention.masks.dense_mask`.
    """
    dtype = q.dtype
    if upcast:
        v = v.float()
    probs, scores = attention_weights_ref(q, k, sliding_window_size=sliding_window_size, keep_first=keep_first,
                                          scale=scale, mask=mask, fa_from=fa_from, upcast=upcast)
    lse = torch.logsumexp(scores.float(), dim=-1)                                # (B, H, Lq)
    v = repeat_kv(v, q.shape[1] // v.shape[1])
    out = torch.matmul(probs.to(v.dtype), v).to(dtype)
    return (out, lse) if return_lse else out


def merge_attention(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor):
    """Combine attention computed over two disjoint key sets into attention over their union.

    ``out_*`` (B, H, L, D), ``lse_*`` (B, H, L) natural-log sum of exp scores (-inf where a part saw no key).
    Returns ``(out, lse)``; out in ``out_a``'s dtype, lse fp32. Rows where both parts are empty stay zero.
    """
    lse_a, lse_b = lse_a.float(), lse_b.float()
    lse = torch.logaddexp(lse_a, lse_b)
    finite = torch.isfinite(lse)
    safe = torch.where(finite, lse, torch.zeros_like(lse))
    wa = torch.where(finite, torch.exp(lse_a - safe), torch.zeros_like(lse)).unsqueeze(-1)
    wb = torch.where(finite, torch.exp(lse_b - safe), torch.zeros_like(lse)).unsqueeze(-1)
    out = wa * out_a.float() + wb * out_b.float()
    return out.to(out_a.dtype), lse
