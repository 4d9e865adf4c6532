"""The SWAA plugin's plain-torch parts that need no vLLM import: the config a model carries (checked before an engine
starts), the layer index of an attention layer, where a windowed layer keeps K and V in its CPU pages, and which KV
blocks a windowed layer may free.

Pages: vLLM's CPU tensor of a layer is (num_blocks, Hkv, block_size, 2 * D). A windowed layer is the only reader
of its own pages and stores, per block, ``block_size`` rows of keys (one token's Hkv * D values each) and then
``block_size`` rows of values, so that a step gathers whole token rows.
"""
from __future__ import annotations

import re

import torch

from ...config import SWAAConfig, config_of, model_label

__all__ = ["config_from_hf", "config_for_model", "layer_index", "page_rows", "write_kv", "blocks_to_free"]


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


def page_rows(slots: torch.Tensor, block_size: int) -> torch.Tensor:
    """Row of the keys of each slot in a windowed layer's CPU pages seen as rows of Hkv * D values; its values are
    ``block_size`` rows further."""
    return (slots // block_size) * 2 * block_size + slots % block_size


def write_kv(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store this step's keys/values (T, Hkv, D) at their slots (block * block_size + offset; < 0 = padding) of a
    windowed layer's contiguous pages, as two copies of whole token rows (indexing the 4-d pages is ~15x slower)."""
    nb, hkv, bs, d2 = kv_cache.shape
    slots = slot_mapping[: key.shape[0]].long()
    key, value = key[: slots.shape[0]], value[: slots.shape[0]]
    keep = slots >= 0
    if not bool(keep.all()):
        key, value, slots = key[keep], value[keep], slots[keep]
    rows = page_rows(slots, bs)
    flat = kv_cache.view(-1, hkv * d2 // 2)
    flat.index_copy_(0, rows, key.reshape(rows.shape[0], -1).to(kv_cache.dtype))
    flat.index_copy_(0, rows + bs, value.reshape(rows.shape[0], -1).to(kv_cache.dtype))


def blocks_to_free(keep_first: int, window: int, computed: int, block_size: int) -> tuple[int, int]:
    """Block range [lo, hi) that no future query of a windowed layer can see once ``computed`` tokens are in
    the cache: blocks entirely after the sinks and entirely before the window of position ``computed``."""
    lo = -(-keep_first // block_size)
    hi = max(0, computed - window + 1) // block_size
    return lo, max(lo, hi)
