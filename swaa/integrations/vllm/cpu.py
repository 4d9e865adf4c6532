"""vLLM's CPU attention backend with the SWAA rule. Full-attention layers are vLLM's own, untouched. Windowed layers
run one batched attention per step and tile shape over their paged cache: the queries of every request of the step
(prefill chunks and decode rows alike) cut into tiles, each against its sinks and window gathered from the cache with
one index built per step (:mod:`.step`), through torch's SDPA in the model's dtype. Decode rows of FA-decode layers
go to vLLM's kernel. The plugin replaces the CPU_ATTN class through vLLM's backend registry; each role has its class
(:mod:`.state`).

Pages: vLLM's CPU cache of a layer is (blocks, Hkv, block_size, 2 * D). ``window`` layers write it themselves as
token rows of keys and of values (:func:`rules.page_rows`; they are the only readers); ``fa_decode`` layers keep
vLLM's own page order (vLLM's kernel reads it at decode), which is learnt once at start-up by writing a probe through
vLLM's cache writer, so the reader is right for every instruction set that writer serves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.v1.attention.backends.cpu_attn import (CPUAttentionBackend, CPUAttentionBackendImpl,
                                                 CPUAttentionMetadataBuilder)

from . import rules, step
from .attend import attend_tiles
from .state import FA_DECODE, FULL, WINDOW, SWAABuilderMixin, SWAAImplMixin, window_spec

__all__ = ["SWAACPUBackend", "SWAACPUImpl", "TILE", "page_order"]

# Queries per prefill tile (a tile of T queries reads S + W - 1 + T keys for S + W visible ones), and the key widths
# that share one rectangle: a request's first tiles see fewer keys and are not padded to the window's width.
# docs/serving.md, "Tiles", has the measurements behind both.
TILE = 64
KEY_BUCKET = 64


def page_order(isa: str, dtype: torch.dtype, block_size: int, head_dim: int) -> torch.Tensor:
    """Where vLLM's CPU cache writer puts each value of one (block, head) page: ``perm`` with
    ``page.flatten()[perm]`` = the page as ``block_size`` rows of K then as many rows of V (D values each), the
    order of the windowed layers' pages for one head (:func:`rules.page_rows`). Learnt from four probes whose values
    (integers below 130, exact in every float type) name the token, the channel and K or V."""
    from vllm import _custom_ops as ops
    bs, d = block_size, head_dim
    tok = torch.arange(bs)[:, None, None].expand(bs, 1, d)
    ch = torch.arange(d)[None, None, :].expand(bs, 1, d)
    seen = []
    for k, v in ((tok % 64, tok % 64), (tok // 64, tok // 64), (ch % 64, ch % 64 + 64), (ch // 64, ch // 64)):
        cache = torch.zeros(1, 1, 2 * bs, d, dtype=dtype)
        ops.cpu_attn_reshape_and_cache((k + 1).to(dtype), (v + 1).to(dtype), cache[:, :, :bs], cache[:, :, bs:],
                                       torch.arange(bs), isa, k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto")
        seen.append(cache.flatten().long() - 1)                          # -1: a value the writer did not touch
    t_lo, t_hi, c, c_hi = seen
    std = (c // 64) * bs * d + (t_lo + 64 * t_hi) * d + c % 64 + 64 * c_hi    # K rows then V rows (rules.page_rows)
    perm = torch.full((2 * bs * d,), -1, dtype=torch.long)
    perm[std.clamp(0, 2 * bs * d - 1)] = torch.arange(2 * bs * d)
    if (t_lo < 0).any() or not torch.equal(perm.sort().values, torch.arange(2 * bs * d)):
        raise NotImplementedError(f"vLLM's CPU cache writer (isa {isa!r}, {dtype}, block {bs}, head_dim {d}) uses a "
                                  "page order the SWAA plugin cannot read")
    return perm


@dataclass(frozen=True)
class CPUTiles:
    """A step's tiles and the page rows of their keys and values: ``blocks`` None reads the layer's own pages; else
    the pages ``blocks`` (vLLM's order) are first put in the plugin's order with ``perm`` and the rows point into
    them."""
    tiles: step.Tiles
    k_rows: torch.Tensor
    v_rows: torch.Tensor
    blocks: torch.Tensor | None = None
    perm: torch.Tensor | None = None

    def rows(self, kv_cache: torch.Tensor) -> torch.Tensor:
        nb, hkv, bs, d2 = kv_cache.shape
        if self.blocks is None:
            return kv_cache.view(-1, hkv * d2 // 2)
        pages = kv_cache.reshape(nb, hkv, -1).index_select(0, self.blocks).index_select(2, self.perm)
        return pages.view(-1, hkv, 2 * bs, d2 // 2).transpose(1, 2).reshape(-1, hkv * d2 // 2)


class SWAACPUImpl(SWAAImplMixin, CPUAttentionBackendImpl):
    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping) -> None:
        if self._role(layer) != WINDOW:
            return super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        rules.write_kv(kv_cache, key, value, slot_mapping)

    def _attend(self, q, kv_cache, layout, out) -> None:
        with torch.no_grad():
            for t in layout:
                attend_tiles(q, t.rows(kv_cache), t.tiles, t.k_rows, t.v_rows, self.scale, out)


class SWAACPUMetadataBuilder(SWAABuilderMixin, CPUAttentionMetadataBuilder):
    """Step layouts of windowed layers: decode rows as tiles of one query, longer runs as tiles of ``TILE`` queries
    grouped by how many keys they read."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.perm = None
        if self.swaa_plan.fa_decode:
            self.perm = page_order(self.isa, self.dtype, self.block_size, self.head_dim)

    def _layout(self, c, use) -> list[CPUTiles]:
        w, s = self.swaa_plan.window, self.swaa_plan.keep_first
        qsl, seq = c.query_start_loc_cpu, c.seq_lens.cpu()
        one = (qsl[1:] - qsl[:-1])[: seq.numel()] == 1
        groups = [(step.segments(qsl, seq, use & one, w, s, 1), 1)]
        runs = step.segments(qsl, seq, use & ~one, w, s, TILE)
        width = (runs.num_keys + KEY_BUCKET - 1) // KEY_BUCKET
        groups += [(runs.subset(width == k), TILE) for k in width.unique().tolist()]
        out = []
        for seg, size in groups:
            t = step.tiles(seg, c.block_table_tensor, self.block_size, w, s, size, self.dtype, self.num_heads,
                           self.num_kv_heads)
            if t is not None:
                out.append(self._where(t))
        return out

    def _where(self, t: step.Tiles) -> CPUTiles:
        bs = self.block_size
        slots, blocks = t.slots, None
        if self.perm is not None:
            blocks, compact = torch.unique(slots // bs, return_inverse=True)
            slots = compact * bs + slots % bs
        k_rows = rules.page_rows(slots, bs)
        return CPUTiles(t, k_rows, k_rows + bs, blocks, self.perm)


class SWAACPUBackend(CPUAttentionBackend):
    """The class vLLM builds every layer with: full-attention layers keep it (vLLM's builder and spec)."""

    @staticmethod
    def get_name() -> str:
        return "CPU_ATTN"                        # the enum entry it replaces

    @staticmethod
    def get_impl_cls():
        return SWAACPUImpl


class SWAACPUWindowBackend(SWAACPUBackend):
    @staticmethod
    def get_builder_cls():
        return SWAACPUMetadataBuilder

    @classmethod
    def customize_spec(cls, spec):
        return window_spec(super().customize_spec(spec))


class SWAACPUFADecodeBackend(SWAACPUBackend):
    @staticmethod
    def get_builder_cls():
        return SWAACPUMetadataBuilder


SWAACPUImpl.role_backends = {FULL: SWAACPUBackend, WINDOW: SWAACPUWindowBackend, FA_DECODE: SWAACPUFADecodeBackend}
