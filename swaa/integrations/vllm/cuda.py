"""vLLM's FlashAttention backend with the SWAA rule (CUDA). Layers that are full attention for every token keep
vLLM's flash kernel; the others read the paged K/V (same layout: K = [..., :D], V = [..., D:] per slot, written by
vLLM's own cache update) and apply the rule per request: long prefills through ``swaa_attention`` (our Triton
kernel, or Flex), decode rows through SDPA over the sink + window positions (:mod:`.rules`).

No GPU with vLLM was available to the project: this file is thin glue over the CPU-tested logic
(:func:`rules.swaa_paged_attention` with a ``dense_fn``, tested with the reference standing in for the kernel)
and the GPU-tested ``swaa_attention``; see the README for what ran where.
"""
from __future__ import annotations

from vllm.v1.attention.backends.flash_attn import (FlashAttentionBackend, FlashAttentionImpl,
                                                   FlashAttentionMetadataBuilder)

from ...attention import swaa_attention
from . import rules
from .state import SWAAImplMixin, attach_rows, kv_spec_for

__all__ = ["SWAAFlashBackend", "SWAAFlashImpl", "SWAAFlashMetadataBuilder"]


def _dense(q, k, v, window, keep_first, scale):
    return swaa_attention(q, k, v, sliding_window_size=window, keep_first=keep_first, scale=scale)


class SWAAFlashMetadataBuilder(FlashAttentionMetadataBuilder):
    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        return attach_rows(super().build(common_prefix_len, common_attn_metadata, fast_build), common_attn_metadata)


class SWAAFlashImpl(SWAAImplMixin, FlashAttentionImpl):
    _dense_fn = staticmethod(_dense)


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
