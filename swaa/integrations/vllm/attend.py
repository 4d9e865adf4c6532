"""The windowed rows of a step, attended in one batched call per layout: tiles through torch's SDPA from a windowed
layer's CPU pages (token rows of keys and of values, :func:`.rules.page_rows`), or packed segments through a varlen
kernel from vLLM's CUDA pages, which hold one row [K | V] per token and head (our Triton kernel; tests pass the
reference in its place).

Layouts: q/out (rows, Hq, D); pages (blocks, Hkv, block_size, 2D); a slot is ``block * block_size + offset``.
"""
from __future__ import annotations

import torch

from .step import Packed, Tiles

__all__ = ["attend_tiles", "attend_packed"]


def attend_tiles(q: torch.Tensor, rows: torch.Tensor, t: Tiles, k_rows: torch.Tensor, v_rows: torch.Tensor,
                 scale: float, out: torch.Tensor) -> None:
    """The rule for the rows of ``t``. ``rows``: the pages as token rows of Hkv * D values; ``k_rows``/``v_rows``
    (tiles, keys): the rows of each tile's keys and values. Every operand is one gather of whole rows; the query
    heads of a KV head are stacked along the query axis (torch's SDPA with ``enable_gqa`` is several times slower
    on CPU)."""
    d = q.shape[-1]
    hkv = rows.shape[1] // d
    n_tiles, n_keys = k_rows.shape
    k = rows.index_select(0, k_rows.view(-1)).view(n_tiles, n_keys, hkv, d).transpose(1, 2)   # (tiles, Hkv, keys, D)
    v = rows.index_select(0, v_rows.view(-1)).view(n_tiles, n_keys, hkv, d).transpose(1, 2)
    qt = q.reshape(-1, d).index_select(0, t.q_index.view(-1)).view(*t.q_index.shape, d)   # (tiles, Hkv, G*size, D)
    o = torch.nn.functional.scaled_dot_product_attention(qt, k, v, attn_mask=t.bias, scale=scale).view(-1, d)
    if t.take is not None:
        o = o.index_select(0, t.take)
    out.view(-1, d).index_copy_(0, t.out_index, o)


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
