"""swaa_attention(): SWAA attention through a registry of backends, with an override that tests use.

Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D), Hq % Hkv == 0 -> out (B, Hq, Lq, D) [, lse (B, Hq, Lq) fp32].
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .flash import flash_attention, flash_available, flash_unsupported
from .flex import (flex_available, flex_flash_attention, flex_flash_available, flex_flash_unsupported,
                   flex_swaa_attention, flex_unsupported)
from .masks import check_window, dense_mask, make_mask_mod, visible, visible_pairs
from .reference import attention_ref, merge_attention
from .sdpa import one_query_span, sdpa_attention, sdpa_unsupported

__all__ = [
    "swaa_attention", "attention_ref", "merge_attention", "Backend", "register_backend", "available_backends",
    "backend_names", "use_backend", "resolve_backend", "dense_mask", "make_mask_mod", "visible", "visible_pairs",
]


@dataclass
class Backend:
    """One attention implementation: ``fn(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from)``.

    ``available()`` returns None or the reason the backend cannot run here; ``unsupported(q, k, v, *, return_lse,
    mask, fa_from)`` returns None or the reason it cannot run these inputs. ``devices`` lists where ``auto``
    considers it, in ``priority`` order (lower first). ``auto`` remembers its choice per routing features
    (:func:`_route_key`), so these three may depend on those features only.
    """

    name: str
    fn: Callable
    available: Callable[[], str | None] = lambda: None
    unsupported: Callable[..., str | None] = lambda *a, **k: None
    devices: tuple[str, ...] = ("cpu", "cuda")
    priority: "int | Callable[..., int]" = 50      # or fn(q, k, *, window, mask, keep_first) -> int

    def rank(self, q, k, window, mask, keep_first=0) -> int:
        if callable(self.priority):
            return self.priority(q, k, window=window, mask=mask, keep_first=keep_first)
        return self.priority


_REGISTRY: dict[str, Backend] = {}
_OVERRIDE: list[str] = []          # stack; top wins when backend="auto"


def register_backend(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    _ROUTES.clear()
    return backend


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def available_backends() -> dict[str, str | None]:
    """{name: None if it can run here, else the reason it cannot}."""
    return {name: b.available() for name, b in sorted(_REGISTRY.items())}


@contextlib.contextmanager
def use_backend(name: str):
    """Force ``backend="auto"`` calls (the model integration's) to one backend inside the block."""
    _get(name)
    _OVERRIDE.append(name)
    try:
        yield
    finally:
        _OVERRIDE.pop()


def _get(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention backend {name!r}; known: {['auto'] + backend_names()}")
    return _REGISTRY[name]


_ROUTES: dict[tuple, Backend] = {}     # auto's choice per routing features (see _route_key)


def _route_key(q, k, window, return_lse, mask, fa_from, keep_first) -> tuple:
    """What ``auto``'s choice may depend on: device, dtype, head_dim, the query-length class (one query, decode,
    prefill, long prefill), whether a decode query's visible keys are one run, window/sinks, mask, FA-decode split,
    LSE and gradients. Every backend's ``rank``, ``available`` and ``unsupported`` read no more than these."""
    lq = q.shape[-2]
    one_run = lq == 1 and one_query_span(k.shape[-2], window, keep_first) is not None
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    return (q.device.type, q.dtype, q.shape[-1], lq == 1, lq <= 16, lq >= 16384, lq >= 32768, one_run,
            window is None, window is not None and window >= 4096, keep_first > 0, mask is None, fa_from is None,
            return_lse, grad, narrow_decode(q, k))


def narrow_decode(q, k) -> bool:
    """A decode grid of at most 8 (sequence, KV head) pairs over at least 64k keys: our split over the keys then
    leads SDPA's full-attention decode by call time (docs/kernels.md, decode table)."""
    return q.shape[0] * k.shape[1] <= 8 and k.shape[-2] >= 65536


def resolve_backend(name: str, q, k, v, *, window=None, return_lse=False, mask=None, fa_from=None,
                    keep_first: int = 0) -> Backend:
    """The backend that will run these inputs, or an error naming why the requested one cannot."""
    if name == "auto":
        forced = _OVERRIDE[-1] if _OVERRIDE else os.environ.get("SWAA_ATTENTION_BACKEND") or None
        if forced:
            name = forced
    if name != "auto":
        b = _get(name)
        why = b.available() or b.unsupported(q, k, v, return_lse=return_lse, mask=mask, fa_from=fa_from)
        if why:
            raise RuntimeError(f"attention backend {name!r} cannot run these inputs: {why}")
        return b
    key = _route_key(q, k, window, return_lse, mask, fa_from, keep_first)
    hit = _ROUTES.get(key)
    if hit is not None:
        return hit
    tried = []
    for b in sorted(_REGISTRY.values(), key=lambda b: b.rank(q, k, window, mask, keep_first)):
        if q.device.type not in b.devices:
            continue
        why = b.available() or b.unsupported(q, k, v, return_lse=return_lse, mask=mask, fa_from=fa_from)
        if why is None:
            _ROUTES[key] = b
            return b
        tried.append(f"{b.name}: {why}")
    raise RuntimeError("no attention backend can run these inputs: " + "; ".join(tried))


def _check_inputs(q, k, v, mask, fa_from):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, H, L, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {tuple(k.shape)} and {tuple(v.shape)}")
    b, hq, lq, d = q.shape
    if k.shape[0] != b or k.shape[-1] != d:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head_dim")
    if hq % k.shape[1]:
        raise ValueError(f"{hq} query heads are not a multiple of {k.shape[1]} KV heads (GQA needs Hq % Hkv == 0)")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape[-2:] != (lq, k.shape[-2])):
        raise ValueError(f"mask must be boolean (B, 1, {lq}, {k.shape[-2]}); got {tuple(mask.shape)} {mask.dtype}")


def swaa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    sliding_window_size: int | None = None,
    keep_first: int = 0,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    mask: torch.Tensor | None = None,
    fa_from=None,
):
    """Attention under the SWAA rule: query ``i`` sees key ``j <= i`` when ``i - j < W`` or ``j < S``.

    ``sliding_window_size`` W (None = full attention), ``keep_first`` S sinks; queries align to the end of the keys
    when ``Lq < Lk``. ``backend``: "auto" (fastest that supports the inputs), or one of ``backend_names()``.
    ``mask``: optional boolean (B, 1, Lq, Lk) visibility before SWAA (padding, packing): positions are counted
    inside it. ``fa_from``: queries at position >= fa_from (int or (B,) tensor) use full attention.
    Returns ``out`` (B, Hq, Lq, D), or ``(out, lse)`` with ``return_lse``.
    """
    check_window(sliding_window_size, keep_first)
    _check_inputs(q, k, v, mask, fa_from)
    if sliding_window_size is None:
        keep_first, fa_from = 0, None          # full attention: sinks and FA decode change nothing
    b = resolve_backend(backend, q, k, v, window=sliding_window_size, return_lse=return_lse, mask=mask,
                        fa_from=fa_from, keep_first=keep_first)
    return b.fn(q, k, v, window=sliding_window_size, keep_first=keep_first, scale=scale,
                return_lse=return_lse, mask=mask, fa_from=fa_from)


def _reference_fn(q, k, v, *, window, keep_first, scale, return_lse, mask, fa_from):
    return attention_ref(q, k, v, sliding_window_size=window, keep_first=keep_first, scale=scale, mask=mask,
                         fa_from=fa_from, return_lse=return_lse)


def _sdpa_rank(q, k, window, mask, keep_first=0) -> int:
    # one decode query over one run of keys (full attention, no sinks, or sinks that touch the window): SDPA's
    # fused decode over a view of those keys, no mask; it leads by call time (docs/kernels.md, decode table)
    if mask is None and q.shape[-2] == 1 and one_query_span(k.shape[-2], window, keep_first) is not None:
        return 3
    return 20


register_backend(Backend("sdpa", sdpa_attention, unsupported=sdpa_unsupported, priority=_sdpa_rank))
# On CUDA flex wins for windows (H200, 32 x 128 heads, W=2048 S=100: 3.2 ms vs 69 ms for SDPA with a mask at 32k) and
# SDPA's fused causal kernel wins for full attention (14.7 vs 21.2 ms): benchmarks/results/backends_cuda_h200.json
register_backend(Backend("flex", flex_swaa_attention, available=flex_available, unsupported=flex_unsupported,
                         devices=("cuda",), priority=lambda q, k, window, mask, **_: 30 if window is None else 10))
def _triton_module():
    from . import triton as t    # imported on first use: TRITON_INTERPRET is read when the kernels are defined
    return t


def _triton_fn(q, k, v, **kw):
    return _triton_module().triton_attention(q, k, v, **kw)


register_backend(Backend("reference", _reference_fn, priority=90))
def _triton_rank(q, k, window, mask, keep_first=0) -> int:
    """Where ``auto`` takes our kernels on CUDA (docs/kernels.md, "Where auto routes"): windows, in inference and
    training, at head_dim > 64 or from 16k queries on (below that at head_dim 64 Flex leads, both bound by the host's
    launch time, except inference with a window of 4096 keys or more); full attention goes to SDPA's fused kernels, except decode of a narrow grid over a long
    cache (:func:`narrow_decode`), where the split over the keys leads."""
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    if q.shape[-2] <= 16 and not training:
        if window is None:
            return 2 if narrow_decode(q, k) else 35        # before SDPA (3) on a narrow grid, else after it
        return 5                                   # windowed decode: split-KV kernel (one run of keys: SDPA, 3)
    if window is None:
        return 35                                  # after SDPA (20)
    wide_or_long = q.shape[-1] > 64 or q.shape[-2] >= 16384
    if training:
        return 5 if wide_or_long else 45           # after Flex (10)
    return 5 if wide_or_long or window >= 4096 else 15     # head_dim 64, short: ours from 4k-key windows on


register_backend(Backend("triton", _triton_fn, available=lambda: _triton_module().triton_available(),
                         unsupported=lambda *a, **kw: _triton_module().triton_unsupported(*a, **kw),
                         devices=("cuda",), priority=_triton_rank))
def _flex_flash_rank(q, k, window, mask, keep_first=0) -> int:
    # inference with a window at head_dim 128 from 32k queries on: 7-10% ahead of our forward on an H200 where
    # FlashAttention-4 is installed (docs/kernels.md, FlashAttention-4); forward+backward ties, so training stays ours
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    return 4 if window is not None and not training and q.shape[-1] == 128 and q.shape[-2] >= 32768 else 60


register_backend(Backend("flex-flash", flex_flash_attention, available=flex_flash_available,
                         unsupported=flex_flash_unsupported, devices=("cuda",), priority=_flex_flash_rank))
register_backend(Backend("flash", flash_attention, available=flash_available, unsupported=flash_unsupported,
                         devices=("cuda",), priority=25))       # flash-attn 2 (or the SWAA fork); not measured on our H200
