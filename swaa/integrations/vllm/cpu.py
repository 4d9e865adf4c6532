"""vLLM's CPU attention backend with the SWAA rule: layers that are full attention for every token keep vLLM's
own kernel; every other layer writes and reads its paged K/V itself and applies the rule per request
(:mod:`.rules`), so windows, sinks, FA decode and per-layer plans are exact under chunked prefill, prefix
caching and mixed batches. The plugin replaces the CPU_ATTN class through vLLM's backend registry."""
from __future__ import annotations

from vllm.v1.attention.backends.cpu_attn import (CPUAttentionBackend, CPUAttentionBackendImpl,
                                                 CPUAttentionMetadataBuilder)

from . import rules
from .state import SWAAImplMixin, attach_rows, kv_spec_for

__all__ = ["SWAACPUBackend", "SWAACPUImpl", "SWAACPUMetadataBuilder"]

class SWAACPUMetadataBuilder(CPUAttentionMetadataBuilder):
    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        return attach_rows(super().build(common_prefix_len, common_attn_metadata, fast_build), common_attn_metadata)


class SWAACPUImpl(SWAAImplMixin, CPUAttentionBackendImpl):
    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping) -> None:
        if self._plan(layer) is None:
            return super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        rules.write_kv(kv_cache, key, value, slot_mapping)


class SWAACPUBackend(CPUAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "CPU_ATTN"                        # the enum entry it replaces

    @staticmethod
    def get_impl_cls():
        return SWAACPUImpl

    @staticmethod
    def get_builder_cls():
        return SWAACPUMetadataBuilder

    @classmethod
    def customize_spec(cls, spec):
        return kv_spec_for(super().customize_spec(spec))
