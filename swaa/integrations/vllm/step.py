"""A vLLM step's windowed attention as a few batched index tensors, built once per step and shared by every layer
of a KV-cache group, with vectorised arithmetic over the requests (no loop over them, no dense full-length mask).

vLLM packs the queries of all requests of a step along one axis: request ``r`` owns query rows
``query_start_loc[r]:query_start_loc[r+1]``, the last ``n_r`` positions of its ``seq_len_r`` tokens (chunked prefill,
prefix caching and decode rows all fall out of that). A *segment* is a run of one request's queries, positions
``[a, b)``; under the rule (:mod:`swaa.attention.masks`) it sees the keys

    [0, min(S, lo))  then  [lo, b),      lo = max(0, a - W + 1)

the sinks that lie before its window, then its window and itself. Renumbering those keys 0, 1, 2, ... keeps the rule
exact with the same W and S (a sink stays below S, distances inside the window are unchanged), so a segment is an
ordinary "queries aligned to the end of the keys" attention problem: what the CUDA varlen kernel takes
(:func:`packed`, one segment per request). On CPU the segments are cut into tiles of at most ``size`` queries and
padded into one rectangle with a small additive mask (:func:`tiles`); the mask's only per-position band is the
window's edge and the diagonal.

Layouts: positions and rows are int64; ``block_table`` (requests, max_blocks); a cache slot is
``block * block_size + offset``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...attention.masks import visible

__all__ = ["Segments", "Tiles", "Packed", "segments", "tiles", "packed"]


@dataclass(frozen=True)
class Segments:
    """Per segment: its request, query positions [a, b), window start ``lo``, sinks before the window ``ns`` and
    the packed query row of position ``a``."""
    req: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    lo: torch.Tensor
    ns: torch.Tensor
    row: torch.Tensor

    def __len__(self) -> int:
        return self.req.numel()

    @property
    def num_keys(self) -> torch.Tensor:
        return self.ns + self.b - self.lo

    def subset(self, keep: torch.Tensor) -> "Segments":
        return Segments(self.req[keep], self.a[keep], self.b[keep], self.lo[keep], self.ns[keep], self.row[keep])


def segments(query_start_loc, seq_lens, use, window: int, keep_first: int, size: int | None = None) -> Segments:
    """The segments of the requests selected by ``use`` (bool per request): one per request (``size`` None) or
    runs of at most ``size`` queries. Requests without queries in this step (padding) are skipped."""
    qsl = torch.as_tensor(query_start_loc).long()
    seq = torch.as_tensor(seq_lens).long()
    nreq = seq.numel()
    n = (qsl[1:] - qsl[:-1])[:nreq]
    use = torch.as_tensor(use, dtype=torch.bool)[:nreq] & (n > 0) & (seq > 0)
    first = seq - n
    per = use.long() if size is None else torch.where(use, (n + size - 1) // size, 0)
    req = torch.repeat_interleave(torch.arange(nreq), per)
    k = torch.arange(req.numel()) - (torch.cumsum(per, 0) - per)[req]       # segment index inside its request
    if size is None:
        a, b = first[req], seq[req]
    else:
        a = first[req] + k * size
        b = torch.minimum(a + size, seq[req])
    lo = (a - window + 1).clamp(min=0)
    return Segments(req, a, b, lo, lo.clamp(max=keep_first), qsl[req] + a - first[req])


def _renumbered(j, ns, lo):
    """The position of a segment's key number ``j``: its sinks ``[0, ns)`` first, then its window from ``lo``."""
    return torch.where(j < ns, j, lo + j - ns)


def _key_positions(seg: Segments, width: int):
    """(segments, width) key positions (padding: position 0, always written) and which are real."""
    j = torch.arange(width)
    pos = _renumbered(j, seg.ns[:, None], seg.lo[:, None])
    real = j < seg.num_keys[:, None]
    return pos.where(real, 0), real


def _slots(block_table, block_size: int, req, pos):
    """Cache slots of positions ``pos`` of requests ``req`` (moved to the block table's device)."""
    req, pos = req.to(block_table.device), pos.to(block_table.device)
    return block_table.long()[req, pos // block_size] * block_size + pos % block_size


@dataclass(frozen=True)
class Tiles:
    """Segments padded into one rectangle of ``size`` query rows, with the query heads of each KV head stacked along
    the query axis (their rows are attended together). ``q_index`` (tiles, Hkv, G * size): row of each stacked query
    in the packed query seen as (rows * Hq, D) (padding rows repeat the tile's first row); ``slots`` (tiles, keys):
    cache slot of each key (padding keys read position 0); ``bias`` (tiles, 1, G * size, keys): 0 where the rule lets
    the row see the key and -inf elsewhere; ``out_index``: the (row * Hq + head) of each real stacked row and
    ``take`` their places in the flattened result (None: every row is real)."""
    q_index: torch.Tensor
    slots: torch.Tensor
    bias: torch.Tensor
    out_index: torch.Tensor
    take: torch.Tensor | None


def tiles(seg: Segments, block_table, block_size: int, window: int, keep_first: int, size: int,
          dtype: torch.dtype, num_heads: int, num_kv_heads: int) -> Tiles | None:
    """The CPU layout of ``seg`` (cut with the same ``size``); None when there is no segment."""
    if len(seg) == 0:
        return None
    groups = num_heads // num_kv_heads
    kpos, kreal = _key_positions(seg, int(seg.num_keys.max()))
    qpos = seg.a[:, None] + torch.arange(size)
    qreal = qpos < seg.b[:, None]
    rows = (seg.row[:, None] + torch.arange(size)).where(qreal, seg.row[:, None])
    see = visible(qpos[:, :, None], kpos[:, None, :], window, keep_first) & kreal[:, None, :]
    bias = torch.zeros(see.shape, dtype=dtype).masked_fill_(~see, float("-inf")).repeat(1, groups, 1).unsqueeze(1)
    heads = torch.arange(num_heads).view(num_kv_heads, groups, 1)
    q_index = (rows[:, None, None, :] * num_heads + heads).view(len(seg), num_kv_heads, groups * size)
    real = qreal[:, None, None, :].expand(-1, num_kv_heads, groups, -1).reshape(-1)
    take = None if bool(real.all()) else real.nonzero().view(-1)
    out_index = q_index.view(-1) if take is None else q_index.view(-1)[take]
    dev = block_table.device
    return Tiles(q_index.to(dev), _slots(block_table, block_size, seg.req[:, None], kpos), bias.to(dev),
                 out_index.to(dev), None if take is None else take.to(dev))


@dataclass(frozen=True)
class Packed:
    """Segments as varlen sequences: query rows ``q_rows`` (in segment order), key slots ``slots`` (the renumbered
    keys of each segment in a row), int32 ``cu_q``/``cu_k`` and the longest query and key runs."""
    q_rows: torch.Tensor
    slots: torch.Tensor
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    max_q: int
    max_k: int


def _runs(starts, lengths):
    """Concatenated ranges [start, start + length) of each pair, and their cumulative lengths (int32, from 0)."""
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=cu[1:])
    idx = torch.arange(int(cu[-1])) - torch.repeat_interleave(cu[:-1] - starts, lengths)
    return idx, cu.int()


def packed(seg: Segments, block_table, block_size: int) -> Packed | None:
    """The varlen layout of ``seg`` (one segment per request): what a varlen kernel over the paged cache takes."""
    if len(seg) == 0:
        return None
    nq, nk = seg.b - seg.a, seg.num_keys
    q_rows, cu_q = _runs(seg.row, nq)
    k_idx, cu_k = _runs(torch.zeros_like(nk), nk)                # key index inside its segment
    owner = torch.repeat_interleave(torch.arange(len(seg)), nk)
    pos = _renumbered(k_idx, seg.ns[owner], seg.lo[owner])
    dev = block_table.device
    return Packed(q_rows.to(dev), _slots(block_table, block_size, seg.req[owner], pos), cu_q.to(dev), cu_k.to(dev),
                  int(nq.max()), int(nk.max()))
