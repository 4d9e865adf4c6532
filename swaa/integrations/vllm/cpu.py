"""vLLM's CPU attention backend with the SWAA rule: layers that are full attention for every token keep vLLM's
own kernel; every other layer writes and reads its paged K/V itself and applies the rule per request
(:mod:`.rules`), so windows, sinks, FA decode and per-layer plans are exact under chunked prefill, prefix
caching and mixed batches. The plugin replaces the CPU_ATTN class through vLLM's backend registry."""
from __future__ import annotations

from vllm.v1.attention.backends.cpu_attn import (CPUAttentionBackend, CPUAttentionBackendImpl,
                                                 CPUAttentionMetadataBuilder)

from . import rules
from .state import active_config, kv_spec_for

__all__ = ["SWAACPUBackend", "SWAACPUImpl", "SWAACPUMetadataBuilder"]

class SWAACPUMetadataBuilder(CPUAttentionMetadataBuilder):
    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        md = super().build(common_prefix_len, common_attn_metadata, fast_build)
        md.swaa_rows = rules.request_rows(common_attn_metadata.query_start_loc_cpu, common_attn_metadata.seq_lens,
                                          common_attn_metadata.is_prefilling)
        return md


class SWAACPUImpl(CPUAttentionBackendImpl):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.swaa = active_config()              # raises here, at start-up, on an invalid config
        self._plans: dict[str, object] = {}

    def _plan(self, layer):
        """The layer's plan, or None where vLLM's own kernel does the same thing (full attention throughout)."""
        name = layer.layer_name
        if name not in self._plans:
            plan = None
            if self.swaa is not None and self.attn_type == "decoder":
                p = self.swaa.layer(rules.layer_index(name))
                plan = p if p.window is not None else None
            if plan is not None and (self.alibi_slopes is not None or self.logits_soft_cap or self.sinks is not None
                                     or self.sliding_window != -1):
                raise ValueError(f"{name}: the SWAA plugin does not combine with ALiBi, soft-capping, learned "
                                 "sinks or a native sliding window; use a model without them")
            self._plans[name] = plan
        return self._plans[name]

    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping) -> None:
        if self._plan(layer) is None:
            return super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        rules.write_kv(kv_cache, key, value, slot_mapping)

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None):
        plan = self._plan(layer)
        if plan is None or attn_metadata is None:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                                   output_block_scale)
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("fused output quantization is not supported with SWAA")
        n = attn_metadata.num_actual_tokens
        out = output[:n].view(n, self.num_heads, self.head_size)
        rules.swaa_paged_attention(plan, query[:n].view(n, self.num_heads, self.head_size), kv_cache,
                                   attn_metadata.block_table, attn_metadata.swaa_rows, self.scale, out)
        return output


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
