"""Launches of the warp-specialised Hopper kernels written in Gluon (forward, dK/dV, dQ), and when they apply.

They run on sm_90 in fp16/bf16 where :mod:`.tuning`'s table lists the head_dim, and only when every operand has a
TMA descriptor (the wrappers fall back to the triton-language kernels otherwise). A Triton whose Gluon API moved on
raises a CompilationError at the first launch: the Gluon kernels are then turned off for the process, with a
warning, and the triton-language kernels run instead.
"""
from __future__ import annotations

import functools
import warnings

import torch

from . import tuning
from .layout import INTERPRET, LOG2E, capability, sm_count, tma_rows

try:
    import triton
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor

    from ._bwd_gluon import _bwd_dkdv_gluon_kernel
    from ._dq_gluon import _bwd_dq_gluon_kernel
    from ._fwd_gluon import CTA_ROWS, WG_ROWS, _fwd_gluon_kernel
    GLUON_ERROR = None
except Exception as e:  # pragma: no cover - depends on the Triton build
    GLUON_ERROR = f"Gluon's Hopper ops are not importable ({e})"


def why_not(kind: str, q, d: int) -> str | None:
    """Why the Gluon kernel of ``kind`` (fwd, dkdv, dq) does not run on these inputs; None when it does."""
    if GLUON_ERROR:
        return GLUON_ERROR
    if INTERPRET or q.device.type != "cuda":
        return "Gluon kernels run on CUDA only (no interpreter)"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"{q.dtype}: the Gluon kernels take fp16/bf16"
    cap = capability(q.device)
    if not tuning.gluon_runs(kind, cap, d):
        return f"compute capability {cap}, head_dim {d}: not in the Gluon {kind} table (tuning.GLUON)"
    return None


def disable(why: str) -> None:
    global GLUON_ERROR
    GLUON_ERROR = why
    warnings.warn(f"{why.splitlines()[0]}; using the triton-language kernels", RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def _smem_layout(rows: int, d: int, dtype):
    return gl.NVMMASharedLayout.get_default_for([rows, d], gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def desc(t, strides, n_heads: int, block_rows: int, block_d: int):
    """A Gluon TMA descriptor over ``t`` (see :func:`.layout.tma_rows`), or None."""
    rows = tma_rows(t, strides, n_heads, block_d)
    if rows is None:
        return None
    d = t.shape[-1]
    return GluonDescriptor(t, [rows[0], rows[1]], [rows[1], 1], [block_rows, d], _smem_layout(block_rows, d, t.dtype))


def _persistent_grid(geo, device):
    n_mg = triton.cdiv(geo.lq, CTA_ROWS) * geo.groups
    n_tiles = n_mg * geo.nseq * geo.hkv
    return (min(n_tiles, sm_count(device)),), n_tiles, n_mg


def forward(q, k, v, o, lse, geo, w, s, scale) -> bool:
    """The Gluon forward into ``o``/``lse``; False when the layout has no TMA descriptors."""
    cfg = tuning.GLUON_FWD
    so, sv = geo.strides(o), geo.strides(v)
    descs = (desc(q, geo.sq, geo.hq, WG_ROWS, geo.block_d), desc(k, geo.sk, geo.hkv, cfg["BLOCK_N"], geo.block_d),
             desc(v, sv, geo.hkv, cfg["BLOCK_N"], geo.block_d))
    if any(x is None for x in descs):
        return False
    grid, n_tiles, n_mg = _persistent_grid(geo, q.device)
    # 12 warps (two 4-warp consumers, three 1-warp loaders padded to a warpgroup): 168 x 384 threads fit the 64k
    # registers, which setmaxnreg then moves to the consumers (240 each) from the loaders (24)
    _fwd_gluon_kernel[grid](
        *descs, o, lse, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse),
        geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * LOG2E, n_tiles, n_mg, D=geo.d, VARLEN=geo.varlen, **cfg,
        num_warps=4, maxnreg=168)
    return True


def dkdv_operands(q, k, v, do, geo):
    """The Gluon dK/dV kernel's four TMA descriptors (q, k, v, dO), or None when the layout allows none."""
    cfg = tuning.GLUON_DKDV
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    descs = (desc(q, geo.sq, geo.hq, bm, geo.block_d), desc(k, geo.sk, geo.hkv, bn, geo.block_d),
             desc(v, geo.strides(v), geo.hkv, bn, geo.block_d), desc(do, geo.strides(do), geo.hq, bm, geo.block_d))
    return None if any(x is None for x in descs) else descs


def dkdv(descs, geo, args, grid, split: bool) -> None:
    """The Gluon dK/dV kernel on ``_bwd_dkdv_kernel``'s grid and arguments (after its four operands)."""
    # 12 warps as in the forward: two 240-register consumers, one loader
    _bwd_dkdv_gluon_kernel[grid](*descs, *args, D=geo.d, VARLEN=geo.varlen, SPLIT=split, **tuning.GLUON_DKDV,
                                 num_warps=4, maxnreg=168)


def dq(q, k, v, do, o, lse, delta, lse_b, dq_out, geo, w, s, scale) -> bool:
    """The Gluon dQ kernel (with the row statistics of its rows); False when the layout has no TMA descriptors."""
    cfg = tuning.GLUON_DQ
    sv, so = geo.strides(v), geo.strides(o)
    descs = (desc(q, geo.sq, geo.hq, WG_ROWS, geo.block_d), desc(k, geo.sk, geo.hkv, cfg["BLOCK_N"], geo.block_d),
             desc(v, sv, geo.hkv, cfg["BLOCK_N"], geo.block_d), desc(do, so, geo.hq, WG_ROWS, geo.block_d))
    if any(x is None for x in descs):
        return False
    grid, n_tiles, n_mg = _persistent_grid(geo, q.device)
    _bwd_dq_gluon_kernel[grid](
        *descs, lse, delta, dq_out, o, lse_b, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse),
        geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * LOG2E, n_tiles, n_mg, D=geo.d, VARLEN=geo.varlen, **cfg,
        num_warps=4, maxnreg=168)
    return True
