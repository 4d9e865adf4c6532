"""SinkWindowCache: a transformers cache that keeps, per sliding layer, only the S sinks and the last W-1 keys.

A sliding layer whose decode tokens are also windowed (no FA decode there) never looks at a key again once it is
neither among the first ``keep_first`` tokens of its sequence nor among the last ``W - 1``: such keys are evicted
and their memory released. Full-attention layers (``non_sliding_layers``, FA-decode layers) keep everything.

Every stored key carries its real position (``-1`` for padding), so sinks are each row's own first real tokens in a
left-padded batch, and the attention function applies the rule on real positions after eviction (RoPE was
applied at those positions when the keys were computed). ``get_seq_length()`` counts every token seen; mask sizes
stay those of the full sequence, which the full-attention layers use.
Layout: keys/values (B, Hkv, slots, D); positions (B, slots) int64.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from ..config import SWAAConfig

__all__ = ["SinkWindowCache", "SinkWindowLayer", "evicting_layers", "install_sink_window", "new_token_positions",
           "prepare_positions"]


class _StepState:
    """Positions of the tokens of the forward in progress, shared by the layers of one cache."""

    def __init__(self):
        self.pos: torch.Tensor | None = None
        self._contig = None                 # (pos, seen, flag): the check made once per forward, not per layer

    def contiguous(self, pos: torch.Tensor, seen: int) -> bool:
        """Whether every row's new positions are ``seen, seen + 1, ...`` (no padding). One host sync per forward:
        the first layer checks, the others reuse the answer."""
        c = self._contig
        if c is None or c[0] is not pos or c[1] != seen:
            flag = bool((pos == torch.arange(seen, seen + pos.shape[-1], device=pos.device)).all())
            self._contig = c = (pos, seen, flag)
        return c[2]


class SinkWindowLayer(DynamicLayer):
    """One sliding layer: stores at most ``keep_first + window - 1`` slots per row once the sequence is longer."""

    def __init__(self, window: int, keep_first: int, state: _StepState | None = None, **kwargs):
        super().__init__(**kwargs)
        self.window, self.keep_first = int(window), int(keep_first)
        self.state = state or _StepState()
        self.pos: torch.Tensor | None = None          # real positions of the stored slots
        self.attn_pos: torch.Tensor | None = None     # positions of the keys returned by the last update()
        self.attn_contiguous = False                  # those positions are 0..n-1 (no eviction, no padding)
        self.seen = 0                                 # slots seen (as DynamicLayer would hold)
        self.evicted = False
        # every row's slots are its positions in order, all sinks present, the rest the newest: known on the host,
        # so eviction is two slices with no sort, gather or host sync (the case without padding)
        self.canonical = True

    @property
    def capacity(self) -> int:
        return self.keep_first + self.window - 1

    def lazy_initialization(self, key_states, value_states) -> None:
        super().lazy_initialization(key_states, value_states)
        self.pos = torch.empty(key_states.shape[0], 0, dtype=torch.long, device=key_states.device)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, q = key_states.shape[0], key_states.shape[-2]
        new_pos = self.state.pos
        if new_pos is None or tuple(new_pos.shape) != (b, q):
            new_pos = torch.arange(self.seen, self.seen + q, device=key_states.device).expand(b, q)
            in_order = True
        else:
            in_order = self.state.contiguous(new_pos, self.seen)
        self.canonical = self.canonical and in_order
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        pos = torch.cat([self.pos, new_pos.to(self.pos.device)], dim=-1)
        self.attn_pos = pos
        # nothing evicted yet and no padding: positions are the slot indices, and the attention can use the
        # ordinary end-aligned rule (and the fast kernels) instead of a dense positional mask
        self.attn_contiguous = self.canonical and not self.evicted
        self.seen += q
        self.keys, self.values, self.pos = self._evict(keys, values, pos)
        return keys, values

    def _evict(self, keys, values, pos):
        cap = self.capacity
        n = pos.shape[-1]
        if n <= cap:
            return keys, values, pos
        if self.canonical:       # sorted positions 0..S-1 first: keep those S slots and the newest W-1
            s, tail = self.keep_first, n - (self.window - 1)
            self.evicted = True
            two = lambda t: torch.cat([t[..., :s, :], t[..., tail:, :]], dim=-2)
            return two(keys), two(values), torch.cat([pos[:, :s], pos[:, tail:]], dim=-1)
        last = pos.max(dim=-1, keepdim=True).values                      # (B, 1) newest real position per row
        keep = (pos >= 0) & ((pos < self.keep_first) | (pos > last - self.window + 1))
        if bool((keep.sum(-1) == n).all()):
            return keys, values, pos
        # per row: the kept slots first, in position order, then filler slots (marked invalid) up to the capacity
        order = torch.argsort((~keep).long() * n + torch.arange(n, device=pos.device), dim=-1)[:, :cap]
        kept_pos = torch.where(keep.gather(-1, order), pos.gather(-1, order), torch.full_like(order, -1))
        idx = order[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        self.evicted = True
        return keys.gather(-2, idx), values.gather(-2, idx), kept_pos

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0             # the full sequence: the non-evicting layers' view

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:                        # legacy form: the absolute length to keep
            tokens_to_remove = tokens_to_remove - self.seen
        if tokens_to_remove == 0:
            return
        if self.evicted:
            raise ValueError(
                f"cannot crop {abs(tokens_to_remove)} tokens from a SinkWindowCache layer that already evicted the "
                "middle of the sequence: the keys to return to are gone. Generate with kv_eviction=False "
                "(apply_swaa(model, cfg, kv_eviction=False)) for assisted or contrastive decoding")
        n = abs(tokens_to_remove)
        self.keys, self.values, self.pos = self.keys[..., :-n, :], self.values[..., :-n, :], self.pos[:, :-n]
        self.seen -= n

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            super().reorder_cache(beam_idx)
            self.pos = self.pos.index_select(0, beam_idx.to(self.pos.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            super().batch_repeat_interleave(repeats)
            self.pos = self.pos.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            super().batch_select_indices(indices)
            self.pos = self.pos[indices]

    def reset(self) -> None:
        super().reset()
        self.pos = self.attn_pos = None
        self.seen, self.evicted, self.canonical = 0, False, True


def evicting_layers(cfg: SWAAConfig, num_layers: int) -> list[int]:
    """Layers whose every query is windowed (sliding, and no FA decode there): the ones that can evict."""
    return [i for i in range(num_layers) if cfg.layer(i).window is not None and not cfg.layer(i).fa_decode]


def _num_layers(config) -> int:
    return config.get_text_config(decoder=True).num_hidden_layers


class SinkWindowCache(DynamicCache):
    """DynamicCache whose evicting layers (see :func:`evicting_layers`) keep only sinks + the last W-1 keys."""

    def __init__(self, config, swaa_config: SWAAConfig | dict | None = None):
        cfg = SWAAConfig.from_dict(swaa_config if swaa_config is not None else getattr(config, "swaa_config", None))
        layers = [DynamicLayer() for _ in range(_num_layers(config))]
        _put_sink_window_layers(layers, cfg)
        Cache.__init__(self, layers=layers)


def _put_sink_window_layers(layers: list, cfg: SWAAConfig) -> bool:
    """Replace the evicting layers of ``layers`` by SinkWindowLayers sharing one step state; False if none evicts."""
    evict = evicting_layers(cfg, len(layers))
    state = _StepState()
    for i in evict:
        layers[i] = SinkWindowLayer(cfg.sliding_window_size, cfg.keep_first, state)
    return bool(evict)


def prepare_positions(cache, attention_mask, query_length: int, batch_size: int, device) -> bool:
    """Before a forward: tell the cache's SinkWindowLayers the real positions of the new tokens. Returns whether the
    cache has any (called by the model's pre-hook that apply_swaa installs)."""
    layers = [l for l in getattr(cache, "layers", []) if isinstance(l, SinkWindowLayer)]
    if not layers:
        return False
    pos = new_token_positions(attention_mask, cache.get_seq_length(), query_length, batch_size, device)
    for layer in layers:
        layer.state.pos = pos
    return True


def new_token_positions(attention_mask, seen: int, query_length: int, batch_size: int, device) -> torch.Tensor:
    """(B, q) real positions of the new tokens from the 2-D padding mask over past + new slots (-1 = padding)."""
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.arange(seen, seen + query_length, device=device).expand(batch_size, query_length)
    m = attention_mask.to(device=device, dtype=torch.long)
    pos = torch.where(m.bool(), m.cumsum(-1) - 1, torch.full_like(m, -1))
    return pos[:, -query_length:]


def install_sink_window(cache, config) -> bool:
    """Turn an empty DynamicCache (the one ``generate`` creates) into a sink+window cache in place: its evicting
    layers are replaced by :class:`SinkWindowLayer`. Returns whether anything was installed."""
    if not isinstance(cache, DynamicCache) or cache.get_seq_length() > 0 or isinstance(cache, SinkWindowCache):
        return False
    cfg = SWAAConfig.from_dict(getattr(config, "swaa_config", None))
    n = _num_layers(config)
    if not evicting_layers(cfg, n):
        return False
    while len(cache.layers) < n:
        cache.layers.append(DynamicLayer())
    return _put_sink_window_layers(cache.layers, cfg)
