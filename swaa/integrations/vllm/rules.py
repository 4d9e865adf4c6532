"""The SWAA rule on vLLM's paged batches, in plain torch (no vLLM import): the config a model carries, which layer
does what, which query rows of a step are decode tokens, which key positions a request needs, reading and writing
K/V through a block table, and which KV blocks a windowed layer may free.

Layouts: vLLM packs the tokens of all requests of a step along one axis. ``query`` (T, Hq, D), ``key``/``value``
(T, Hkv, D); request ``r`` owns rows ``query_start_loc[r]:query_start_loc[r+1]``; its queries are the last
``q_len`` positions of its ``seq_len`` tokens (chunked prefill and prefix caching fall out of that). Our cache
layout per layer is vLLM's CPU tensor (num_blocks, Hkv, block_size, 2 * D) seen as K = [..., :D], V = [..., D:]
per token slot; we read and write it ourselves for every layer that runs the SWAA rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ...attention.masks import visible
from ...config import LayerPlan, SWAAConfig, config_of, model_label

__all__ = ["config_from_hf", "config_for_model", "layer_index", "RequestRows", "request_rows", "key_positions",
           "write_kv", "gather_kv", "attend_request", "blocks_to_free", "swaa_paged_attention"]


def config_from_hf(hf_config) -> SWAAConfig | None:
    """The SWAA config carried by a vLLM model (``hf_overrides={"swaa_config": {...}}``), validated against
    its layer count; None when the model has none (the plugin then stays out of the way). A model that keeps its
    own sliding window is refused: vLLM would run that window in every layer, and lay out its KV cache for it,
    under SWAA's rule."""
    cfg = config_of(hf_config, source="hf_overrides")
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    native = getattr(text, "sliding_window", None)
    if cfg is not None and native is not None:
        off = '"sliding_window": None'
        types = getattr(text, "layer_types", None) or []
        if any(t != "full_attention" for t in types):
            off += f', "layer_types": ["full_attention"] * {len(types)}'
        raise ValueError(f"{model_label(hf_config)} has a native sliding_window={native}; SWAA adapts full-attention "
                         f"models and does not run under another window: turn it off with hf_overrides={{{off}, "
                         '"swaa_config": ...}')
    return cfg


def config_for_model(model: str, hf_overrides: dict, *, revision: str | None = None,
                     trust_remote_code: bool = False) -> SWAAConfig | None:
    """:func:`config_from_hf` on ``model``'s own config with ``hf_overrides`` applied as vLLM applies them: the
    checks the engine makes at start-up, made before one starts."""
    from transformers import AutoConfig
    hf_config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    hf_config.update(hf_overrides)
    return config_from_hf(hf_config)


_INT = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def layer_index(layer_name: str) -> int:
    """The decoder layer index in a vLLM attention layer name ("model.layers.7.self_attn.attn" -> 7)."""
    found = _INT.findall(layer_name)
    if len(found) != 1:
        raise ValueError(f"cannot read one layer index from the attention layer name {layer_name!r}; the SWAA "
                         "plugin supports decoder-only models with one attention per layer")
    return int(found[0])


@dataclass(frozen=True)
class RequestRows:
    """One request of a step: its query rows ``start:end`` in the packed batch, its sequence length (keys,
    this step's tokens included) and whether its queries are decode tokens (generated, after the prompt)."""
    index: int          # the request's row in the block table
    start: int
    end: int
    seq_len: int
    decode: bool

    @property
    def q_len(self) -> int:
        return self.end - self.start


def request_rows(query_start_loc, seq_lens, is_prefilling=None) -> list[RequestRows]:
    """Split a step into requests. ``is_prefilling`` is vLLM's per-request flag (num_computed < num_prompt): a
    prefilling request's queries are all prompt tokens (chunked prefill never mixes prompt and generated
    tokens), the others' are decode tokens. Without it, a one-token query of a longer sequence counts as
    decode (what HF generate does)."""
    qsl = [int(x) for x in torch.as_tensor(query_start_loc).tolist()]
    sl = [int(x) for x in torch.as_tensor(seq_lens).tolist()]
    pre = None if is_prefilling is None else [bool(x) for x in torch.as_tensor(is_prefilling).tolist()]
    rows = []
    for r in range(min(len(qsl) - 1, len(sl))):
        start, end = qsl[r], qsl[r + 1]
        if end <= start or sl[r] <= 0:
            continue                                  # padding rows of the batch
        decode = (not pre[r]) if pre is not None else (end - start == 1 and sl[r] > 1)
        rows.append(RequestRows(r, start, end, sl[r], decode))
    return rows


def _row_rule(plan: LayerPlan, decode: bool) -> tuple[int | None, int]:
    """(window, keep_first) that this layer applies to a request's queries."""
    if plan.window is None or (decode and plan.fa_decode):
        return None, 0
    return plan.window, plan.keep_first


def key_positions(plan: LayerPlan, req: RequestRows) -> torch.Tensor:
    """Sorted key positions the request's queries can see: everything for full attention, else the sinks plus
    the window of the first query onwards (the keys in between are never read; their blocks may be freed)."""
    window, sinks = _row_rule(plan, req.decode)
    if window is None:
        return torch.arange(req.seq_len)
    first_q = req.seq_len - req.q_len
    lo = max(0, first_q - window + 1)
    head = torch.arange(min(sinks, lo))
    return torch.cat([head, torch.arange(lo, req.seq_len)])


def _split(kv_cache: torch.Tensor, head_dim: int):
    return kv_cache[..., :head_dim], kv_cache[..., head_dim:]    # (NB, Hkv, BS, D) views


def write_kv(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store this step's keys/values (T, Hkv, D) at their slots (block * block_size + offset; < 0 = padding)."""
    nb, hkv, bs, d2 = kv_cache.shape
    d = d2 // 2
    slots = slot_mapping[: key.shape[0]].long()
    keep = slots >= 0
    slots, key, value = slots[keep], key[: keep.shape[0]][keep], value[: keep.shape[0]][keep]
    kc, vc = _split(kv_cache, d)
    blk, off = slots // bs, slots % bs
    kc[blk, :, off] = key.to(kc.dtype)               # advanced indices around a slice -> (T, Hkv, D)
    vc[blk, :, off] = value.to(vc.dtype)


def gather_kv(kv_cache: torch.Tensor, block_row: torch.Tensor, positions: torch.Tensor):
    """Keys and values (Hkv, len(positions), D) of one request at the given sorted positions: the blocks that
    hold them are copied whole (few, contiguous), then the positions are picked inside that copy."""
    nb, hkv, bs, d2 = kv_cache.shape
    pos = positions.to(block_row.device).long()
    logical = torch.unique_consecutive(pos // bs)                      # logical blocks touched, in order
    blocks = kv_cache.index_select(0, block_row.long()[logical])       # (n, Hkv, BS, 2D)
    flat = blocks.permute(1, 0, 2, 3).reshape(hkv, -1, d2)             # (Hkv, n * BS, 2D)
    first, n = int(pos[0]), pos.numel()
    if int(pos[-1]) - first + 1 == n:                                  # one run of positions: a slice, no gather
        start = first - int(logical[0]) * bs
        kv = flat[:, start:start + n]
    else:
        kv = flat[:, torch.searchsorted(logical, pos // bs) * bs + pos % bs]
    return kv[..., : d2 // 2], kv[..., d2 // 2:]


def attend_request(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                   window: int | None, keep_first: int, scale: float) -> torch.Tensor:
    """SDPA over explicit positions: q (Lq, Hq, D), k/v (Hkv, Lk, D) -> (Lq, Hq, D), computed in fp32. The
    query heads of one KV head are stacked along the query axis, so K/V are never repeated."""
    lq, hq, d = q.shape
    hkv = k.shape[0]
    g = hq // hkv
    mask = visible(q_pos[:, None], k_pos[None, :], window, keep_first).repeat(g, 1)     # (G*Lq, Lk)
    qh = q.float().view(lq, hkv, g, d).permute(1, 2, 0, 3).reshape(hkv, g * lq, d)      # (Hkv, G*Lq, D)
    out = torch.nn.functional.scaled_dot_product_attention(qh, k.float(), v.float(), attn_mask=mask, scale=scale)
    return out.view(hkv, g, lq, d).permute(2, 0, 1, 3).reshape(lq, hq, d).to(q.dtype)


def swaa_paged_attention(plan: LayerPlan, query, kv_cache, block_table, rows: list[RequestRows], scale: float,
                         out: torch.Tensor, dense_fn=None) -> torch.Tensor:
    """The rule for every request of a step, reading K/V from the paged cache; writes ``out`` (T, Hq, D).

    ``dense_fn(q, k, v, window, keep_first, scale)`` (q (1, Hq, Lq, D), k/v (1, Hkv, Lk, D), queries aligned to
    the end of the keys) takes the requests whose keys start at position 0 and run without a gap, e.g. a fused
    kernel on GPU for long prefills; the others (windowed decode: sinks + window) go through SDPA over explicit
    positions."""
    for req in rows:
        window, sinks = _row_rule(plan, req.decode)
        k_pos = key_positions(plan, req)
        k, v = gather_kv(kv_cache, block_table[req.index], k_pos)
        q = query[req.start:req.end]
        if dense_fn is not None and k_pos.numel() == req.seq_len:          # positions 0..seq_len-1
            o = dense_fn(q.transpose(0, 1)[None], k[None], v[None], window, sinks, scale)
            out[req.start:req.end] = o[0].transpose(0, 1)
        else:
            q_pos = torch.arange(req.seq_len - req.q_len, req.seq_len)
            out[req.start:req.end] = attend_request(q, k, v, q_pos, k_pos, window, sinks, scale)
    return out


def blocks_to_free(keep_first: int, window: int, computed: int, block_size: int) -> tuple[int, int]:
    """Block range [lo, hi) that no future query of a windowed layer can see once ``computed`` tokens are in
    the cache: blocks entirely after the sinks and entirely before the window of position ``computed``."""
    lo = -(-keep_first // block_size)
    hi = max(0, computed - window + 1) // block_size
    return lo, max(lo, hi)
