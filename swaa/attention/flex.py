"""FlexAttention backend: the SWAA mask_mod with a BlockMask built analytically (never an N x N tensor).

Tiles entirely outside the sinks and the window are absent from the BlockMask; tiles where every pair is
visible are listed as "full" (no mask_mod call); only edge tiles (diagonal, window edge, sink edge) are masked.
Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D) -> (B, Hq, Lq, D); LSE (B, Hq, Lq) natural log.
Compiled on CUDA, and on CPU for inference when enabled (first compile is slow there: ~40 s cold).
"""
from __future__ import annotations

import functools
import warnings

import torch

from .masks import block_classes, make_mask_mod

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
    _IMPORT_ERROR = None
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9
        AuxRequest = None
except Exception as e:  # pragma: no cover - old torch
    flex_attention = BlockMask = None
    _IMPORT_ERROR = f"torch.nn.attention.flex_attention is not importable ({e}); needs torch >= 2.5"

BLOCK = 128
# on CPU, inference calls of at least this many (query, key) pairs are compiled: eager flex materialises the whole
# score matrix, while a compile costs tens of seconds per shape on 2 cores
CPU_COMPILE_PAIRS = 2048 * 2048


def flex_available() -> str | None:
    return _IMPORT_ERROR


def flex_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if mask is not None or fa_from is not None:
        return ("flex builds its BlockMask from (window, keep_first) alone; padding masks and FA-decode "
                "training splits go to backend='sdpa'")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return "FlexAttention has no backward on CPU; use backend='sdpa' for training on CPU"
    return None


def make_block_mask(lq: int, lk: int, window, keep_first: int, device, block: int = BLOCK):
    """BlockMask for the SWAA rule from :func:`swaa.attention.masks.block_classes` (costs nq * nk, not lq * lk)."""
    partial, full = block_classes(lq, lk, window, keep_first, block, block, device=device)

    def to_indices(sel):
        num = sel.sum(-1, dtype=torch.int32)
        idx = torch.argsort(sel.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
        return num[None, None], idx[None, None]                   # (1, 1, nq), (1, 1, nq, nk)

    kv_num, kv_idx = to_indices(partial)
    full_num, full_idx = to_indices(full)
    # window, sinks and offset enter the mask_mod as 0-d tensors, not Python ints: a compiled flex_attention then
    # treats them as inputs instead of specialising (and recompiling) on every (W, S, Lk - Lq)
    as_t = lambda x: torch.tensor(x, device=device, dtype=torch.int32)
    mask_mod = make_mask_mod(None if window is None else as_t(window), as_t(keep_first), q_offset=as_t(lk - lq))
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(block, block), mask_mod=mask_mod, seq_lengths=(lq, lk))


@functools.lru_cache(maxsize=64)
def _cached_block_mask(lq, lk, window, keep_first, device_str):
    return make_block_mask(lq, lk, window, keep_first, torch.device(device_str))


@functools.lru_cache(maxsize=1)
def _compiled():
    # one compile per (shape, dtype, W is None): a benchmark or a notebook sweeping lengths and head counts passes
    # dynamo's default limit of 8 and would silently fall back to eager flex (which materialises N x N scores)
    import torch._dynamo.config as dc
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dc, name):
            setattr(dc, name, max(getattr(dc, name), 256))
    if hasattr(dc, "accumulated_recompile_limit"):
        dc.accumulated_recompile_limit = max(dc.accumulated_recompile_limit, 4096)
    return torch.compile(flex_attention, dynamic=False)


def _should_compile(q, k, return_lse) -> bool:
    if q.device.type == "cuda":
        return True
    if return_lse:                                           # CPU: return_lse only works eagerly
        return False
    return q.shape[-2] * k.shape[-2] >= CPU_COMPILE_PAIRS


def flex_swaa_attention(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from):
    lq, lk = q.shape[-2], k.shape[-2]
    bm = _cached_block_mask(lq, lk, window, keep_first, str(q.device))
    compiled = _should_compile(q, k, return_lse)
    fn = _compiled() if compiled else flex_attention
    kw = dict(block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    if compiled and q.device.type == "cuda" and lq * (q.shape[1] // k.shape[1]) > 64:
        # flex's split-KV decoding kernel (picked for Lq < 128) finds no valid config for e.g. Lq=113 with GQA 4
        # on H200 / torch 2.11 ("NoValidChoicesError"); keep it for true decode shapes only
        kw["kernel_options"] = {"FORCE_USE_FLEX_ATTENTION": True}
    if return_lse:
        kw.update(return_aux=AuxRequest(lse=True)) if AuxRequest is not None else kw.update(return_lse=True)
    with warnings.catch_warnings():
        if not compiled:  # eager flex on CPU is expected here; its "use torch.compile" advice is noise
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        res = fn(q, k, v, **kw)
    if return_lse:
        out, aux = res
        lse = aux.lse if hasattr(aux, "lse") else aux
        return out, lse.float()
    return res


# -- FlexAttention on FlashAttention-4's CuTe-DSL kernels ("flex-flash") ---------------------------------------------
# torch reaches FA4 through torch.compile with kernel_options={"BACKEND": "FLASH"} when the flash-attn-4 package (and
# NVIDIA's CUTLASS DSL) is installed. Its code generation cannot load a captured 0-d tensor, so this mask_mod closes
# over W, S and the query offset as Python ints: one compile per (shape, W, S).
FLASH = {"BACKEND": "FLASH"}


@functools.lru_cache(maxsize=1)
def flex_flash_available() -> str | None:
    import importlib.util
    import typing
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    from torch.nn.attention import flex_attention as fa
    if "FLASH" not in typing.get_args(getattr(fa, "_Backend", typing.Literal["AUTO"])):
        return f"torch {torch.__version__} has no FlexAttention BACKEND='FLASH'"
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:
        found = False
    if not found:
        return ("FlashAttention-4 is not installed (pip install flash-attn-4 nvidia-cutlass-dsl "
                "nvidia-cutlass-dsl-libs-core nvidia-cutlass-dsl-libs-cu13)")
    return None


def flex_flash_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if mask is not None or fa_from is not None:
        return "padding masks and FA-decode training splits go to backend='sdpa'"
    if return_lse:
        return "the FLASH backend returns no log-sum-exp here; use backend='flex' or 'triton'"
    if q.device.type != "cuda":
        return "FlashAttention-4 runs on CUDA only"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"FlashAttention-4 takes fp16/bf16, got {q.dtype}"
    if torch.cuda.get_device_capability(q.device) < (9, 0):
        return f"FlashAttention-4 needs sm_90 or newer, this GPU is sm_{''.join(map(str, torch.cuda.get_device_capability(q.device)))}"
    return None


@functools.lru_cache(maxsize=64)
def _flash_block_mask(lq, lk, window, keep_first, device_str):
    bm = make_block_mask(lq, lk, window, keep_first, torch.device(device_str))
    return BlockMask.from_kv_blocks(bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices,
                                    BLOCK_SIZE=bm.BLOCK_SIZE, mask_mod=make_mask_mod(window, keep_first, lk - lq),
                                    seq_lengths=bm.seq_lengths)


def flex_flash_attention(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from):
    bm = _flash_block_mask(q.shape[-2], k.shape[-2], window, keep_first, str(q.device))
    return _compiled()(q, k, v, block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
                       kernel_options=FLASH)
