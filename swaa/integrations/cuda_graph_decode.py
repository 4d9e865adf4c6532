"""Decode steps a CUDA graph can replay: a static sink+window cache and a greedy decoder over it.

A batch-1 HF decode step on an H200 is bound by the host: 36-80 ms for Qwen3-4B, ~1-2 ms of Python and launches
per layer, and that host time drifts by 1.7x within one run. Replaying the whole step as one CUDA graph leaves
only the device's work (weights and keys read once), but a graph needs every tensor at a fixed address and no
host decision that changes between steps. :class:`StaticDecodeCache` gives each layer fixed buffers:

- ring, for layers whose decode is windowed (sliding, no FA decode: the layers a :class:`SinkWindowCache`
  evicts): S sink slots + W window slots. The token at position p goes to slot p while p < S, else to
  S + (p - S) mod W, overwriting position p - W, which no later query sees. The slots then hold exactly the
  keys the next query may see, and attention does not depend on the order of the keys (RoPE was applied at
  their real positions), so a step attends to every slot with no mask (with a validity mask while a short
  prompt has not filled them yet);
- linear, for layers that keep every key (full attention, non-sliding layers, FA decode): the token at p goes to
  slot p, and a step attends to the first p + 1 slots through a length read on the device.

One device tensor, the position of the token being fed, drives every layer; the step increments it.
:class:`GraphDecoder` converts a prefilled cache, warms up, captures one greedy step and replays it (CPU, or a
model whose step cannot be captured: the same static step runs eagerly). Batches without padding.
Layout: keys/values (B, Hkv, slots, D); positions (1,) int64 on the model's device.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..attention import available_backends, swaa_attention
from ..config import SWAAConfig, config_of
from .cache import SinkWindowLayer, evicting_layers

__all__ = ["StaticDecodeLayer", "StaticDecodeCache", "GraphDecoder"]


class StaticDecodeLayer(CacheLayerMixin):
    """One layer's fixed buffers: ``kind`` "ring" (sinks + window slots) or "linear" (every key, up to capacity)."""

    def __init__(self, kind: str, keys: torch.Tensor, values: torch.Tensor, pos: torch.Tensor, *, keep_first: int = 0,
                 window: int | None = None, valid: torch.Tensor | None = None, kernel: str = "auto"):
        super().__init__()
        self.kind, self.keys, self.values, self.pos = kind, keys, values, pos
        self.keep_first, self.window, self.valid, self.kernel = keep_first, window, valid, kernel
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:   # built filled, never lazily
        pass

    def slot(self) -> torch.Tensor:
        """(1,) slot of the token at ``self.pos``, computed on the device."""
        if self.kind == "linear":
            return self.pos
        s, w = self.keep_first, self.window
        return torch.where(self.pos < s, self.pos, s + torch.remainder(self.pos - s, w))

    def update(self, key_states, value_states, *args, **kwargs):
        if key_states.shape[-2] != 1:
            raise ValueError(f"a StaticDecodeCache takes one token per step; got {key_states.shape[-2]}: prefill "
                             "into a DynamicCache and convert it with StaticDecodeCache.from_cache")
        idx = self.slot()
        self.keys.index_copy_(2, idx, key_states.to(self.keys.dtype))
        self.values.index_copy_(2, idx, value_states.to(self.values.dtype))
        if self.valid is not None:
            self.valid.index_fill_(0, idx, True)
        return self.keys, self.values

    def attend(self, query: torch.Tensor, scale: float | None) -> torch.Tensor:
        """(B, Hq, 1, D) attention of the step's query over this layer's slots (no host sync)."""
        if self.kind == "ring":
            mask = None if self.valid is None else self.valid[None, None, None, :]
            return swaa_attention(query, self.keys, self.values, scale=scale, mask=mask)
        use_triton = self.kernel == "triton" or (self.kernel == "auto" and query.is_cuda
                                                 and available_backends()["triton"] is None)
        if use_triton:
            from ..attention.triton import triton_decode
            return triton_decode(query, self.keys, self.values, scale=scale, kv_len=self.pos + 1)
        slots = torch.arange(self.keys.shape[-2], device=self.keys.device)
        return swaa_attention(query, self.keys, self.values, scale=scale, mask=(slots <= self.pos)[None, None, None])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_seq_length(self) -> int:
        return self.owner.seen                 # the host's count (reading self.pos would sync with the device)

    def get_max_length(self) -> int:
        return self.keys.shape[-2]


class StaticDecodeCache(Cache):
    """Fixed-address caches for decode steps (see the module doc). Build with :meth:`from_cache`."""

    static_decode = True          # the "swaa" attention function hands such a cache's layers the whole step

    def __init__(self, layers: list[StaticDecodeLayer], pos: torch.Tensor, seen: int):
        super().__init__(layers=layers)
        self.pos, self.seen = pos, seen
        for layer in layers:
            layer.owner = self

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        # the sizes of a plain causal step over the whole sequence, so that the "swaa" mask function answers None
        # (no mask to build inside the graph); the static layers apply their own rule in attend()
        return self.seen + query_length, 0

    @property
    def nbytes(self) -> int:
        return sum(l.keys.numel() * l.keys.element_size() * 2 for l in self.layers)

    @classmethod
    def from_cache(cls, cache, config, max_new_tokens: int, *, kernel: str = "auto") -> "StaticDecodeCache":
        """Copy a prefilled cache (a DynamicCache, or the SinkWindowCache apply_swaa installs) into static buffers
        with room for ``max_new_tokens`` more tokens in the layers that keep every key."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: give the number of decode steps to make room for (>= 1)")
        cfg = config_of(config) or SWAAConfig()
        n = cache.get_seq_length()
        if n < 1:
            raise ValueError("the cache is empty: prefill the prompt first (model(ids, past_key_values=cache))")
        layers_in = cache.layers
        ring = set(evicting_layers(cfg, len(layers_in)))
        dev = layers_in[0].keys.device
        pos = torch.full((1,), n, dtype=torch.long, device=dev)
        out = []
        for i, layer in enumerate(layers_in):
            keys, values = layer.keys, layer.values
            if isinstance(layer, SinkWindowLayer):
                if not layer.canonical:
                    raise ValueError("StaticDecodeCache: the prompt batch was padded; static decode takes batches "
                                     "without padding (decode padded batches with model.generate)")
                kpos = layer.pos[0]
            else:
                kpos = torch.arange(keys.shape[-2], device=dev)
            if keys.shape[-2] != kpos.shape[-1] or (not isinstance(layer, SinkWindowLayer) and keys.shape[-2] != n):
                raise ValueError(f"layer {i} holds {keys.shape[-2]} keys for {n} tokens seen: a padded or cropped "
                                 "cache; static decode takes a plain prefilled cache")
            b, h, _, d = keys.shape
            if i in ring:
                s, w = cfg.keep_first, cfg.sliding_window_size
                keep = (kpos < s) | (kpos > n - w)           # what the first decode query (at n) may see, less itself
                kp = kpos[keep]
                slots = torch.where(kp < s, kp, s + torch.remainder(kp - s, w))
                kb = keys.new_zeros(b, h, s + w, d)
                vb = values.new_zeros(b, h, s + w, d)
                kb[:, :, slots] = keys[:, :, keep]
                vb[:, :, slots] = values[:, :, keep]
                filled = min(n, s) + min(max(n - s, 0), w - 1)   # slots holding keys; the next token fills one more
                valid = None
                if filled + 1 < s + w:                              # a short prompt: mask the empty slots
                    valid = torch.zeros(s + w, dtype=torch.bool, device=dev)
                    valid[slots] = True
                out.append(StaticDecodeLayer("ring", kb, vb, pos, keep_first=s, window=w, valid=valid,
                                             kernel=kernel))
            else:
                cap = n + max_new_tokens
                kb = keys.new_zeros(b, h, cap, d)
                vb = values.new_zeros(b, h, cap, d)
                kb[:, :, :n] = keys
                vb[:, :, :n] = values
                out.append(StaticDecodeLayer("linear", kb, vb, pos, kernel=kernel))
        return cls(out, pos, n)


class GraphDecoder:
    """Greedy decode of an HF model under SWAA with each step replayed as one CUDA graph.

    ``cache``/``next_token``: a prefilled cache and the token to feed next (the prefill's argmax), as
    ``swaa.speed.measure`` or ``model(ids, past_key_values=DynamicCache(...), use_cache=True)`` give them. The cache is
    copied into a :class:`StaticDecodeCache` (the original can be dropped). ``graph``: None = on CUDA, True =
    required (an error names what broke the capture), False = the same static step run eagerly. ``warmup`` steps
    (at least one) run eagerly before the capture (kernels compiled, allocator warm) and count as decoded tokens;
    the last runs with torch's sync debugging set to raise, so a step that waits on the host is never captured
    (a failed capture would leave the process's CUDA RNG unusable): it stays eager, with the cause in ``.reason``.
    ``.step()`` decodes one token; ``.tokens()`` returns those decoded so far (B, n).
    """

    def __init__(self, model, cache, next_token: torch.Tensor, max_new_tokens: int, *, graph: bool | None = None,
                 warmup: int = 2, kernel: str = "auto"):
        if getattr(model.config, "_attn_implementation", None) != "swaa":
            raise ValueError("GraphDecoder needs the model's attention in the 'swaa' registry entry: call "
                             "swaa.apply_swaa(model, cfg) first (cfg=None for full attention)")
        if next_token.dim() != 2 or next_token.shape[1] != 1:
            raise ValueError(f"next_token must be (batch, 1) token ids; got shape {tuple(next_token.shape)}")
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.cache = StaticDecodeCache.from_cache(cache, model.config, self.max_new_tokens + 1, kernel=kernel)
        dev = self.cache.pos.device
        b = next_token.shape[0]
        self.tok = next_token.to(dev).clone()
        self.out = torch.zeros(self.max_new_tokens, b, dtype=torch.long, device=dev)
        self.count = torch.zeros(1, dtype=torch.long, device=dev)
        self.logits = None
        self.done = 0
        want = dev.type == "cuda" if graph is None else bool(graph)
        if want and dev.type != "cuda":
            raise ValueError(f"graph=True needs a CUDA model; this one is on {dev}. Use graph=None or False")
        self.graph, self.reason = None, None if want else "not requested (or not CUDA)"
        if want:
            self._capture(warmup, required=graph is True)

    def _body(self):
        b = self.tok.shape[0]
        with torch.no_grad():
            out = self.model(self.tok, position_ids=self.cache.pos.view(1, 1).expand(b, 1),
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1]
            nxt = logits.argmax(-1)
            self.out.index_copy_(0, self.count, nxt[None])
            self.tok.copy_(nxt[:, None])
            self.cache.pos.add_(1)
            self.count.add_(1)
        return logits

    def _eager_step(self):
        self.logits = self._body()
        self._advance()

    def _advance(self):
        self.done += 1
        self.cache.seen += 1

    def _probe_step(self) -> str | None:
        """One eager step with torch's sync debugging set to raise: a step that waits on the host (``.item()``,
        ``bool(tensor)``, ``nonzero``) cannot be captured, and a capture that fails half-way leaves the process's
        CUDA RNG unusable, so such a step must never reach the capture. Returns what synchronised, or None. A step
        stopped half-way is rerun as a whole: it rewrites the same cache slots with the same values (the position
        and the fed token advance only at its end)."""
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            self._eager_step()
            return None
        except RuntimeError as e:
            if "synchroniz" not in str(e).lower():
                raise
            return str(e).splitlines()[0][:200]
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    def _capture(self, warmup: int, required: bool):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        n = min(max(warmup, 1), self.max_new_tokens - 1)      # at least the probe step, and room for one replay
        if n < 1:
            self.reason = f"eager steps: max_new_tokens={self.max_new_tokens} leaves no step to replay"
            if required:
                raise ValueError(f"graph=True needs max_new_tokens >= 2 (one eager warm-up step, then replays); got "
                                 f"{self.max_new_tokens}")
            return
        with torch.cuda.stream(stream):
            for _ in range(n - 1):
                self._eager_step()
            synced = self._probe_step()              # the last warm-up step
            if synced is not None:
                self._eager_step()                   # rerun whole (the probe may have stopped half-way)
        torch.cuda.current_stream().wait_stream(stream)
        if synced is not None:
            if required:
                raise RuntimeError(f"the decode step synchronises with the host, so it cannot be captured as a CUDA "
                                   f"graph ({synced}); decode with graph=False, or model.generate")
            self.reason = f"eager steps: the step synchronises with the host ({synced})"
            return
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g):
                self.logits = self._body()
        except Exception as e:          # e.g. a MoE router's nonzero(): a host sync inside the step
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if required:
                raise RuntimeError(f"the decode step could not be captured as a CUDA graph ({msg}); decode with "
                                   "graph=False, or model.generate") from e
            torch.cuda.synchronize()
            self.reason = f"capture failed, eager steps: {msg}"
            return
        self.graph = g

    def step(self) -> None:
        """Decode one token (a graph replay, or the eager static step)."""
        if self.done >= self.max_new_tokens:
            raise RuntimeError(f"GraphDecoder made room for max_new_tokens={self.max_new_tokens}; build a new one "
                               "with a larger max_new_tokens")
        if self.graph is not None:
            self.graph.replay()
            self._advance()
        else:
            self._eager_step()

    def tokens(self) -> torch.Tensor:
        """(B, n) tokens decoded so far (each the argmax after the previous one; the first after next_token)."""
        return self.out[:self.done].T
