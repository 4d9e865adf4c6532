"""The windowed rows of a step, attended in one batched call per layout over pages that hold one row [K | V] per token
and head (vLLM's CUDA page, and the CPU page of a windowed layer): tiles through torch's SDPA (CPU), or packed
segments through a varlen kernel (CUDA: our Triton kernel; tests pass the reference in its place).

Layouts: q/out (rows, Hq, D); pages (blocks, Hkv, block_size, 2D); a slot is ``block * block_size + offset``.
"""
from __future__ import annotations

import torch

from .step import Packed, Tiles

__all__ = ["tile_index", "attend_tiles", "attend_packed"]


def tile_index(slots: torch.Tensor, num_kv_heads: int, block_size: int) -> torch.Tensor:
    """(tiles, Hkv, keys) row of each (key slot, head) in contiguous pages seen as (blocks * Hkv * block_size, 2D)
    (one gather of whole rows: several times faster on CPU than indexing the 4-d pages)."""
    heads = torch.arange(num_kv_heads, device=slots.device)[None, :, None]
    return ((slots // block_size)[:, None, :] * num_kv_heads + heads) * block_size + (slots % block_size)[:, None, :]


def attend_tiles(q: torch.Tensor, pages: torch.Tensor, t: Tiles, index: torch.Tensor, scale: float,
                 out: torch.Tensor) -> None:
    """The rule for the rows of ``t``, with ``index`` from :func:`tile_index` on its slots. The query heads of a KV
    head are stacked along the query axis (torch's SDPA with ``enable_gqa`` is several times slower on CPU)."""
    n_tiles, size = t.rows.shape
    hq, d = q.shape[1], q.shape[2]
    hkv = index.shape[1]
    kv = pages.view(-1, 2 * d).index_select(0, index.view(-1)).view(*index.shape, 2 * d)   # (tiles, Hkv, keys, 2D)
    qt = q.index_select(0, t.rows.view(-1)).view(n_tiles, size, hkv, hq // hkv, d)
    qt = qt.permute(0, 2, 3, 1, 4).reshape(n_tiles, hkv, -1, d)           # (tiles, Hkv, G * size, D)
    o = torch.nn.functional.scaled_dot_product_attention(qt, kv[..., :d], kv[..., d:], attn_mask=t.bias, scale=scale)
    o = o.view(n_tiles, hkv, hq // hkv, size, d).permute(0, 3, 1, 2, 4).reshape(-1, hq, d)
    out.index_copy_(0, t.out_rows, o.index_select(0, t.take))


def attend_packed(q: torch.Tensor, pages: torch.Tensor, p: Packed, window: int, keep_first: int, scale: float,
                  out: torch.Tensor, kernel) -> None:
    """The rule for the rows of ``p`` through ``kernel`` (the signature of
    :func:`swaa.attention.triton.swaa_attention_varlen`): each segment's keys renumbered from 0 obey the same rule."""
    d = q.shape[2]
    bs = pages.shape[2]
    kv = pages[p.slots // bs, :, p.slots % bs]                             # (keys, Hkv, 2D)
    o = kernel(q.index_select(0, p.q_rows), kv[..., :d], kv[..., d:], p.cu_q, p.cu_k, p.max_q, p.max_k,
               sliding_window_size=window, keep_first=keep_first, scale=scale)
    out.index_copy_(0, p.q_rows, o.to(out.dtype))
