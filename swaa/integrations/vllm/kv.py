"""KV memory release for windowed decode: a KV cache spec that remembers the sinks and the window, and a
manager that frees the blocks between them (modelled on vLLM's own middle-range freeing for R-SWA).

A layer whose decode tokens are windowed (sliding, no FA decode) never reads keys that are past the sinks and
before the window of the newest token again, so once ``computed`` tokens are in the cache the blocks entirely
inside ``[keep_first, computed - W + 1)`` go back to vLLM's pool (replaced by the null block in the request's
block table, which our attention never reads). Registered through vLLM's KV cache spec registry; no vLLM code
is patched.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.kv_cache_interface import FullAttentionSpec
from vllm.v1.kv_cache_spec_registry import KVCacheSpecRegistry

from .rules import blocks_to_free

__all__ = ["SinkWindowSpec", "SinkWindowManager", "register"]


@dataclass(frozen=True)
class SinkWindowSpec(FullAttentionSpec):
    """A full-attention page layout whose layers only ever look at ``swaa_keep_first`` sinks and the last
    ``swaa_window`` keys (the sliding window itself stays None so vLLM treats the layer as full otherwise)."""
    swaa_window: int = 0
    swaa_keep_first: int = 0

    @classmethod
    def merge(cls, specs):
        keys = {(s.swaa_window, s.swaa_keep_first) for s in specs}
        if len(keys) != 1:
            raise ValueError(f"layers of one KV cache group disagree on (window, keep_first): {sorted(keys)}")
        merged = FullAttentionSpec.merge.__func__(cls, specs)
        return replace(merged, swaa_window=specs[0].swaa_window, swaa_keep_first=specs[0].swaa_keep_first)


class SinkWindowManager(FullAttentionManager):
    """Frees, per request, the blocks no windowed query will read again (sinks and window are kept)."""

    def __init__(self, kv_cache_spec: SinkWindowSpec, **kwargs) -> None:
        super().__init__(kv_cache_spec, **kwargs)
        self.swaa_window = kv_cache_spec.swaa_window
        self.swaa_keep_first = kv_cache_spec.swaa_keep_first

    def remove_skipped_blocks(self, request_id: str, processed_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        lo, hi = blocks_to_free(self.swaa_keep_first, self.swaa_window, processed_computed_tokens, self.block_size)
        self._remove_blocks_in_range(request_id, lo, hi)


_REGISTERED = False


def register() -> None:
    """Add the spec and its manager to vLLM's registry (after vLLM's built-ins, which register lazily)."""
    global _REGISTERED
    if _REGISTERED:
        return
    KVCacheSpecRegistry._ensure_registered()
    KVCacheSpecRegistry.register(SinkWindowSpec, SinkWindowManager, uniform_type_base_spec=FullAttentionSpec)
    _REGISTERED = True
