"""flash-attn binding: the SWAA fork's native ``keep_first``, or stock flash-attn for the window merged with the
sink part by LSE; unavailable (with the reason) otherwise.

Stock path: the window is flash-attn's own sliding window (``window_size=(W-1, 0)``, bottom-right aligned like our
rule); the sinks it misses are keys ``j < S`` with ``i - j >= W``: at most S keys per query, computed densely and
merged by log-sum-exp. Layout at this boundary: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D); flash-attn itself takes
(B, L, H, D).
"""
from __future__ import annotations

import importlib.util
import inspect
import math

import torch

from .reference import attention_ref, merge_attention

__all__ = ["flash_available", "flash_attention", "sink_part", "window_plus_sinks"]


def _flash_fn():
    from flash_attn import flash_attn_func
    return flash_attn_func


def flash_available() -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return ("flash_attn is not installed (pip install flash-attn on a CUDA machine, or the SWAA fork for "
                "native keep_first)")
    if not torch.cuda.is_available():
        return "flash_attn needs a CUDA device"
    try:
        _flash_fn()
    except Exception as e:  # pragma: no cover - broken install
        return f"flash_attn is installed but does not import ({e})"
    return None


def _native_keep_first() -> bool:
    return "keep_first" in inspect.signature(_flash_fn()).parameters


def sink_part(q, k, v, window: int, keep_first: int, scale: float):
    """Attention of each query over the sinks its window misses (keys j < S with i - j >= W): (out, lse)."""
    lq, lk = q.shape[-2], k.shape[-2]
    s = min(keep_first, lk)
    i = torch.arange(lk - lq, lk, device=q.device).view(1, 1, lq, 1)
    j = torch.arange(s, device=q.device).view(1, 1, 1, s)
    only_sinks = (j <= i) & (i - j >= window)                                   # (1, 1, Lq, S)
    # as a base mask with no window, attention_ref keeps exactly these pairs (each is causal within its row)
    return attention_ref(q, k[..., :s, :], v[..., :s, :], mask=only_sinks, scale=scale, return_lse=True)


def window_plus_sinks(q, k, v, window: int, keep_first: int, scale: float, window_fn):
    """SWAA attention as ``window_fn`` (window only, returns out, lse) merged with :func:`sink_part` by LSE."""
    out_w, lse_w = window_fn(q, k, v, window, scale)
    if keep_first == 0 or k.shape[-2] <= window:
        return out_w, lse_w
    out_s, lse_s = sink_part(q, k, v, window, keep_first, scale)
    return merge_attention(out_w, lse_w, out_s.to(out_w.dtype), lse_s)


def _flash_window(q, k, v, window, scale):
    fn = _flash_fn()
    ws = (-1, -1) if window is None else (window - 1, 0)
    out, lse, _ = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True,
                     window_size=ws, return_attn_probs=True)
    return out.transpose(1, 2), lse.float()


def flash_attention(q, k, v, *, window, keep_first, scale, return_lse, mask=None, fa_from=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if window is not None and keep_first and _native_keep_first():
        fn = _flash_fn()
        out, lse, _ = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True,
                         window_size=(window - 1, 0), keep_first=keep_first, return_attn_probs=True)
        out, lse = out.transpose(1, 2), lse.float()
    elif window is None:
        out, lse = _flash_window(q, k, v, None, scale)
    else:
        out, lse = window_plus_sinks(q, k, v, window, keep_first, scale, _flash_window)
    return (out, lse) if return_lse else out


def flash_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if mask is not None or fa_from is not None:
        return "padding masks and FA-decode training splits go to backend='sdpa'"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn takes fp16/bf16, got {q.dtype}"
    return None
