"""Our Triton kernels for sink + sliding-window attention: forward, backward, varlen (cu_seqlens) and decode.

Registered as backend "triton". Runs on CUDA, and on CPU under ``TRITON_INTERPRET=1`` (slowly: for tests).
Layouts: dense q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D); packed q (total_q, Hq, D), k/v (total_k, Hkv, D) with
``cu_seqlens``. bf16/fp16 inputs with fp32 accumulation; fp32 inputs use IEEE dots. Any head_dim up to 256.

The package: ``autograd`` (forward/backward launches, the autograd function, the dense and varlen entry points),
``decode`` (split-KV decode), ``gluon`` (the warp-specialised Hopper kernels' launches), ``layout`` (strides, TMA
descriptors, device facts), ``tuning`` (tiles and stages per architecture and head_dim); the kernels themselves are
the ``_*.py`` files, which import only Triton. docs/kernels.md explains the design.
"""
from __future__ import annotations

import torch

from .tuning import INTERPRET

__all__ = ["triton_available", "triton_unsupported", "triton_attention", "swaa_attention_varlen", "triton_decode",
           "INTERPRET"]

try:
    from .autograd import swaa_attention_varlen, triton_attention
    from .decode import triton_decode
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - no triton wheel
    _IMPORT_ERROR = f"triton is not importable ({e})"


def triton_available() -> str | None:
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    if INTERPRET or torch.cuda.is_available():
        return None
    return "no CUDA device (set TRITON_INTERPRET=1 before importing swaa to run the kernels on CPU, slowly)"


def triton_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if mask is not None or fa_from is not None:
        return "padding masks and per-row FA-decode splits go to backend='sdpa' (use the varlen entry point instead)"
    if q.device.type != "cuda" and not INTERPRET:
        return f"tensors on {q.device.type}; the Triton kernels need CUDA (or TRITON_INTERPRET=1)"
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {q.dtype} is not supported (fp16, bf16, fp32)"
    if q.shape[-1] > 256:
        return f"head_dim {q.shape[-1]} > 256"
    return None
