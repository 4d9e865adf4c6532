"""KV memory of windowed layers: a KV-cache spec for layers that only ever read their sinks and their window, and the
manager that frees the blocks in between (modelled on vLLM's middle-range freeing for R-SWA).

The spec is its own kind of layer for vLLM's grouping (``uniform_type_base_spec`` is itself, and it merges only with
its own kind), so a model whose other layers keep every key (full attention, FA decode) gets separate KV-cache
groups, one block table each, as vLLM's hybrid allocator gives sliding and full layers. A windowed layer never reads
keys past its sinks and before the window of its newest query again, so once ``computed`` tokens are in the cache
the blocks entirely inside ``[keep_first, computed - W + 1)`` go back to vLLM's pool (the request's block table
holds the null block there, which the attention never reads). Registered through vLLM's KV-cache spec registry; no
vLLM code is patched.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from vllm.utils.math_utils import cdiv
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.kv_cache_interface import AttentionSpec, FullAttentionSpec
from vllm.v1.kv_cache_spec_registry import KVCacheSpecRegistry

from .rules import blocks_to_free

__all__ = ["SinkWindowSpec", "SinkWindowManager", "register", "sink_window_spec"]


@dataclass(frozen=True, kw_only=True)
class SinkWindowSpec(AttentionSpec):
    """The page layout of a full-attention layer whose queries only see ``swaa_keep_first`` sinks and the last
    ``swaa_window`` keys."""
    swaa_window: int
    swaa_keep_first: int

    def max_memory_usage_bytes(self, vllm_config) -> int:
        # one prefill chunk may still touch every position up to the model's length
        return cdiv(vllm_config.model_config.max_model_len, self.block_size) * self.page_size_bytes

    @classmethod
    def merge(cls, specs):
        # vLLM groups layers by trying merges and reading an AssertionError as "different kinds"
        if not all(type(s) is cls and s == specs[0] for s in specs):
            raise AssertionError("a KV-cache group of SWAA windowed layers takes only the same window and sinks")
        return specs[0]

    def as_full(self) -> FullAttentionSpec:
        """The same pages as a full-attention spec (for vLLM's prefix-cache lookup)."""
        return FullAttentionSpec(**{f.name: getattr(self, f.name) for f in fields(AttentionSpec) if f.init})


def sink_window_spec(spec: AttentionSpec, window: int, keep_first: int) -> SinkWindowSpec:
    """``spec``'s page layout as a windowed layer's spec."""
    register()
    return SinkWindowSpec(**{f.name: getattr(spec, f.name) for f in fields(AttentionSpec) if f.init},
                          swaa_window=window, swaa_keep_first=keep_first)


class SinkWindowManager(FullAttentionManager):
    """Frees, per request, the blocks no windowed query will read again (sinks and window are kept). A prefix-cache
    hit needs every block from the start still cached, as for full attention (freed blocks stay cached in vLLM's
    pool until they are reused)."""

    def __init__(self, kv_cache_spec: SinkWindowSpec, **kwargs) -> None:
        super().__init__(kv_cache_spec, **kwargs)
        self.swaa_window = kv_cache_spec.swaa_window
        self.swaa_keep_first = kv_cache_spec.swaa_keep_first

    @classmethod
    def find_longest_cache_hit(cls, block_hashes, max_length, kv_cache_group_ids, block_pool, kv_cache_spec,
                               drop_eagle_block, alignment_tokens, dcp_world_size=1, pcp_world_size=1):
        return super().find_longest_cache_hit(block_hashes, max_length, kv_cache_group_ids, block_pool,
                                              kv_cache_spec.as_full(), drop_eagle_block, alignment_tokens,
                                              dcp_world_size, pcp_world_size)

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
    KVCacheSpecRegistry.register(SinkWindowSpec, SinkWindowManager, uniform_type_base_spec=SinkWindowSpec)
    _REGISTERED = True
