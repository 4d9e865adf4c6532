"""vLLM's FlashAttention backend with the SWAA rule (CUDA). Layers that are full attention for every token keep
vLLM's flash kernel; the others read the paged K/V (same layout: K = [..., :D], V = [..., D:] per slot, written by
vLLM's own cache update) and apply the rule per request: long prefills through ``swaa_attention`` (our Triton
kernel, or Flex), decode rows through SDPA over the sink + window positions (:mod:`.rules`).

No GPU with vLLM was available to the project: this file is thin glue over the CPU-tested logic
(:func:`rules.swaa_paged_attention` with a ``dense_fn``, tested with the reference standing in for the kernel)
and the GPU-tested ``swaa_attention``; see the README for what ran where.
"""
from __future__ import annotations

import torch
from vllm.v1.attention.backends.flash_attn import (FlashAttentionBackend, FlashAttentionImpl,
                                                   FlashAttentionMetadataBuilder)

from ...attention import swaa_attention
from . import rules
from .state import active_config, kv_spec_for

__all__ = ["SWAAFlashBackend", "SWAAFlashImpl", "SWAAFlashMetadataBuilder"]


def _dense(q, k, v, window, keep_first, scale):
    return swaa_attention(q, k, v, sliding_window_size=window, keep_first=keep_first, scale=scale)


class SWAAFlashMetadataBuilder(FlashAttentionMetadataBuilder):
    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        md = super().build(common_prefix_len, common_attn_metadata, fast_build)
        md.swaa_rows = rules.request_rows(common_attn_metadata.query_start_loc_cpu,
                                          common_attn_metadata.seq_lens.cpu(), common_attn_metadata.is_prefilling)
        return md


class SWAAFlashImpl(FlashAttentionImpl):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.swaa = active_config()
        self._plans: dict[str, object] = {}

    def _plan(self, layer):
        name = layer.layer_name
        if name not in self._plans:
            plan = None
            if self.swaa is not None and self.attn_type == "decoder":
                p = self.swaa.layer(rules.layer_index(name))
                plan = p if p.window is not None else None
            if plan is not None and (self.alibi_slopes is not None or self.logits_soft_cap or self.sinks is not None
                                     or self.sliding_window not in (None, (-1, -1))):
                raise ValueError(f"{name}: the SWAA plugin does not combine with ALiBi, soft-capping, learned "
                                 "sinks or a native sliding window; use a model without them")
            self._plans[name] = plan
        return self._plans[name]

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None):
        plan = self._plan(layer)
        if plan is None or attn_metadata is None:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                                   output_block_scale)
        if output_scale is not None or output_block_scale is not None or self.kv_cache_dtype != "auto":
            raise NotImplementedError("SWAA layers need an unquantized KV cache and unquantized outputs")
        n = attn_metadata.num_actual_tokens
        out = output[:n].view(n, self.num_heads, self.head_size)
        with torch.no_grad():
            rules.swaa_paged_attention(plan, query[:n].view(n, self.num_heads, self.head_size), kv_cache,
                                       attn_metadata.block_table, attn_metadata.swaa_rows, self.scale, out,
                                       dense_fn=_dense)
        return output


class SWAAFlashBackend(FlashAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "FLASH_ATTN"

    @staticmethod
    def get_impl_cls():
        return SWAAFlashImpl

    @staticmethod
    def get_builder_cls():
        return SWAAFlashMetadataBuilder

    @classmethod
    def customize_spec(cls, spec):
        return kv_spec_for(super().customize_spec(spec))
