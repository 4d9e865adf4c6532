"""The windowed rows of a step, attended in one batched call per layout: tiles through torch's SDPA from a windowed
layer's CPU pages (K and V rows, :func:`.rules.page_rows`), or packed segments through a varlen kernel from vLLM's
CUDA pages, which hold one row [K | V] per token and head (our Triton kernel; tests pass the reference in its place).

Layouts: q/out (rows, Hq, D); pages (blocks, Hkv, block_size, 2D); a slot is ``block * block_size + offset``.
"""
from __future__ import annotations

import torch

from .step import Packed, Tiles

__all__ = ["attend_tiles", "attend_packed"]


def attend_tiles(q: torch.Tensor, rows: torch.Tensor, t: Tiles, k_index: torch.Tensor, v_index: torch.Tensor,
                 scale: float, out: torch.Tensor) -> None:
    """The rule for the rows of ``t``. ``rows``: the pages as rows of D values; ``k_index``/``v_index`` (tiles, Hkv,
    keys): the rows of each tile's keys and values (one gather each, contiguous for SDPA). The query heads of a KV
    head are stacked along the query axis (torch's SDPA with ``enable_gqa`` is several times slower on CPU)."""
    n_tiles, size = t.rows.shape
    hq, d = q.shape[1], q.shape[2]
    hkv = k_index.shape[1]
    k = rows.index_select(0, k_index.view(-1)).view(*k_index.shape, d)                    # (tiles, Hkv, keys, D)
    v = rows.index_select(0, v_index.view(-1)).view(*v_index.shape, d)
    qt = q.index_select(0, t.rows.view(-1)).view(n_tiles, size, hkv, hq // hkv, d)
    qt = qt.permute(0, 2, 3, 1, 4).reshape(n_tiles, hkv, -1, d)           # (tiles, Hkv, G * size, D)
    o = torch.nn.functional.scaled_dot_product_attention(qt, k, v, attn_mask=t.bias, scale=scale)
    o = o.view(n_tiles, hkv, hq // hkv, size, d).permute(0, 3, 1, 2, 4).reshape(-1, hq, d)
    if t.take.numel() != o.shape[0]:
        o = o.index_select(0, t.take)
    out.index_copy_(0, t.out_rows, o)


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
