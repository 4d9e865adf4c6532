"""vLLM's FlashAttention backend with the SWAA rule (CUDA), built as the CPU one (:mod:`.cpu`, :mod:`.state`).
Full-attention layers are vLLM's own. Windowed layers run one varlen call per step over all their rows (prefill
chunks and decode rows together): each request's queries against its sinks and window, gathered from vLLM's pages
(one row [K | V] per token and head, written by vLLM's own cache update) and renumbered from 0 (:mod:`.step`), through
our Triton kernel ``swaa_attention_varlen``. Decode rows of FA-decode layers go to vLLM's flash kernel with vLLM's
own metadata for them. Each role has its backend class, and windowed layers their own KV-cache group.

No GPU with vLLM was available to the project: the shared parts are tested on CPU with vLLM's CPU backend, the
varlen path with the reference standing in for the kernel (tests/unit/test_vllm_rules.py), and the kernel on its own
on GPUs; docs/serving.md says what ran where.
"""
from __future__ import annotations

import torch
from vllm.v1.attention.backend import AttentionCGSupport
from vllm.v1.attention.backends.flash_attn import (FlashAttentionBackend, FlashAttentionImpl,
                                                   FlashAttentionMetadataBuilder)

from ...attention.triton import swaa_attention_varlen
from . import step
from .attend import attend_packed
from .state import FA_DECODE, FULL, WINDOW, SWAABuilderMixin, SWAAImplMixin, window_spec

__all__ = ["SWAAFlashBackend", "SWAAFlashImpl"]


class SWAAFlashImpl(SWAAImplMixin, FlashAttentionImpl):
    def _attend(self, q, kv_cache, layout, out) -> None:
        if layout is not None:
            with torch.no_grad():
                attend_packed(q, kv_cache, layout, self.swaa.sliding_window_size, self.swaa.keep_first, self.scale,
                              out, swaa_attention_varlen)


class SWAAFlashMetadataBuilder(SWAABuilderMixin, FlashAttentionMetadataBuilder):
    """Step layouts of windowed layers: one varlen segment per request (host-side lengths: no CUDA graphs)."""
    _cudagraph_support = AttentionCGSupport.NEVER

    def _layout(self, c, use):
        w, s = self.swaa_plan.window, self.swaa_plan.keep_first
        seg = step.segments(c.query_start_loc_cpu, c.seq_lens.cpu(), use, w, s)
        return step.packed(seg, c.block_table_tensor, self.kv_cache_spec.block_size)


class SWAAFlashBackend(FlashAttentionBackend):
    """The class vLLM builds every layer with: full-attention layers keep it (vLLM's builder and spec)."""

    @staticmethod
    def get_name() -> str:
        return "FLASH_ATTN"

    @staticmethod
    def get_impl_cls():
        return SWAAFlashImpl


class SWAAFlashWindowBackend(SWAAFlashBackend):
    @staticmethod
    def get_builder_cls():
        return SWAAFlashMetadataBuilder

    @classmethod
    def customize_spec(cls, spec):
        return window_spec(super().customize_spec(spec))


class SWAAFlashFADecodeBackend(SWAAFlashBackend):
    @staticmethod
    def get_builder_cls():
        return SWAAFlashMetadataBuilder


SWAAFlashImpl.role_backends = {FULL: SWAAFlashBackend, WINDOW: SWAAFlashWindowBackend,
                               FA_DECODE: SWAAFlashFADecodeBackend}
