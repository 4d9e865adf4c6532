"""Forward and backward launches and the autograd function, dense (B, H, L, D) and packed (T, H, D) with cu_seqlens.

Forward: the Gluon kernel where :mod:`.tuning` lists it, else ``_fwd_kernel``. Backward: the dQ kernel runs first
and also writes the row statistics (delta = rowsum(dO * O), the LSE with +inf for rows that saw no key), then the
dK/dV kernel (Gluon where listed), whose sink blocks' later queries are split over extra programs writing fp32
partials that ``_bwd_sink_sum_kernel`` sums. ``LAST_KERNELS`` records which kernel of each kind ran last ("gluon"
or "triton"), for tests and benchmarks.
"""
from __future__ import annotations

import math

import torch

from ..masks import check_window
from . import gluon
from . import tuning
from .layout import (LOG2E, Geometry, dot_mode, kernel_layout, needs_grad, softmax_scale, strides_dense,
                     tma_desc, window_args)

try:
    import triton

    from ._bwd import _bwd_dkdv_kernel, _bwd_dq_kernel, _bwd_sink_sum_kernel
    from ._fwd import _fwd_kernel
except ImportError:  # pragma: no cover - no triton wheel
    triton = None

LAST_KERNELS: dict[str, str] = {}


def _compiled(kind: str, launch) -> bool:
    """Run a Gluon ``launch``; on a CompilationError turn the Gluon kernels off (with a warning) and return False."""
    try:
        return launch() is not False
    except triton.CompilationError as e:       # a Triton whose Gluon API moved on: keep the portable kernels
        gluon.disable(f"the Gluon {kind} does not compile with triton {triton.__version__}: {e}")
        return False


def _operands(q, k, v, do, geo, bm, bn):
    """TMA descriptors for (q, k, v, dO) with these tiles, else the tensors themselves; and whether they are TMA."""
    descs = (tma_desc(q, geo.sq, geo.hq, bm, geo.block_d), tma_desc(k, geo.sk, geo.hkv, bn, geo.block_d),
             tma_desc(v, geo.strides(v), geo.hkv, bn, geo.block_d))
    if do is not None:
        descs += (tma_desc(do, geo.strides(do), geo.hq, bm, geo.block_d),)
    tma = all(x is not None for x in descs)
    return (descs if tma else (q, k, v) + ((do,) if do is not None else ())), tma


def forward(q, k, v, geo: Geometry, w, s, scale):
    o = torch.empty_like(q)
    lse = torch.empty(geo.lse_shape, device=q.device, dtype=torch.float32)
    if gluon.why_not("fwd", q, geo.d) is None and _compiled(
            "forward", lambda: gluon.forward(q, k, v, o, lse, geo, w, s, scale)):
        LAST_KERNELS["fwd"] = "gluon"
        return o, lse
    bm, bn, warps, stages = tuning.tiles("fwd", geo.d)
    (q_, k_, v_), tma = _operands(q, k, v, None, geo, bm, bn)
    _fwd_kernel[(triton.cdiv(geo.lq, bm) * geo.groups, geo.nseq * geo.hkv)](
        q_, k_, v_, o, lse, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *geo.strides(v), *geo.strides(o),
        *geo.lse_strides(lse), geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * LOG2E, D=geo.d, BLOCK_D=geo.block_d,
        BLOCK_M=bm, BLOCK_N=bn, VARLEN=geo.varlen, DOT=geo.dot, TMA=tma, DEFER=tuning.defer_pv(geo.d),
        num_warps=warps, num_stages=stages)
    LAST_KERNELS["fwd"] = "triton"
    return o, lse


def sink_split(geo: Geometry, w, s, bm, bn):
    """(sink blocks, query blocks per chunk, partial slots) when the dK/dV kernel splits the sink blocks' later
    queries over extra programs, else None: with sinks and a window shorter than the keys (so that queries exist
    that see only the sinks). A chunk holds about as many query blocks as a window block's program visits, and
    there are at most ~64 chunks."""
    if s <= 0 or w >= geo.lk:
        return None
    nqb = triton.cdiv(geo.lq, bm)
    chunk = max(triton.cdiv(w + bn, bm), triton.cdiv(nqb, 64))
    return triton.cdiv(min(s, geo.lk), bn), chunk, 1 + triton.cdiv(nqb, chunk)


def _dq(q, k, v, do, o, lse, delta, lse_b, dq, geo: Geometry, w, s, scale) -> None:
    """dQ into ``dq``, writing ``delta`` and ``lse_b`` for the dK/dV kernel launched after it."""
    if gluon.why_not("dq", q, geo.d) is None and _compiled(
            "dQ", lambda: gluon.dq(q, k, v, do, o, lse, delta, lse_b, dq, geo, w, s, scale)):
        LAST_KERNELS["dq"] = "gluon"
        return
    bm, bn, warps, stages = tuning.tiles("dq", geo.d)
    (q_, k_, v_, do_), tma = _operands(q, k, v, do, geo, bm, bn)
    _bwd_dq_kernel[(triton.cdiv(geo.lq, bm) * geo.groups, geo.nseq * geo.hkv)](
        q_, k_, v_, do_, lse, delta, dq, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *geo.strides(v), *geo.strides(o),
        *geo.lse_strides(lse), geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * LOG2E, o, lse_b, D=geo.d,
        BLOCK_D=geo.block_d, BLOCK_M=bm, BLOCK_N=bn, VARLEN=geo.varlen, DOT=geo.dot, TMA=tma, num_warps=warps,
        num_stages=stages)
    LAST_KERNELS["dq"] = "triton"


def backward(do, q, k, v, o, lse, geo: Geometry, w, s, scale):
    do = do if do.stride() == o.stride() else torch.empty_like(o).copy_(do)
    delta, lse_b = torch.empty_like(lse), torch.empty_like(lse)      # (B, H, Lq) or (H, T), lse's strides
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _dq(q, k, v, do, o, lse, delta, lse_b, dq, geo, w, s, scale)
    descs = gluon.dkdv_operands(q, k, v, do, geo) if gluon.why_not("dkdv", q, geo.d) is None else None
    if descs is not None:
        bm, bn = tuning.GLUON_DKDV["BLOCK_M"], tuning.GLUON_DKDV["BLOCK_N"]
    else:
        bm, bn, warps, stages = tuning.tiles("dkdv", geo.d)
    nkb, heads = triton.cdiv(geo.lk, bn), geo.nseq * geo.hkv
    split = sink_split(geo, w, s, bm, bn)
    if split:
        # the sink blocks' later queries (which see only the sinks) in chunks of about one window's work each
        nsb, chunk, parts = split
        partial = torch.zeros((2, parts, heads, nsb * bn, geo.block_d), device=q.device, dtype=torch.float32)
        dkp, dvp = partial[0], partial[1]
    else:
        nsb, chunk, parts, dkp, dvp = 1, 1, 1, dk, dv
    grid = (nkb + nsb * (parts - 1), heads)                               # no split: parts == 1, one per block
    args = (lse_b, delta, dk, dv, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *geo.strides(v), *geo.strides(o),
            *geo.lse_strides(lse_b), geo.lq, geo.lk, geo.hkv, geo.groups, w, s, scale * LOG2E, dkp, dvp, nkb, nsb,
            chunk)
    if descs is not None:
        if not _compiled("dK/dV", lambda: gluon.dkdv(descs, geo, args, grid, bool(split))):
            return backward(do, q, k, v, o, lse, geo, w, s, scale)           # again on the triton-language kernels
        LAST_KERNELS["dkdv"] = "gluon"
    else:
        (q_, k_, v_, do_), tma = _operands(q, k, v, do, geo, bm, bn)
        _bwd_dkdv_kernel[grid](q_, k_, v_, do_, *args, D=geo.d, BLOCK_D=geo.block_d, BLOCK_M=bm, BLOCK_N=bn,
                               VARLEN=geo.varlen, DOT=geo.dot, TMA=tma, SPLIT=bool(split), num_warps=warps,
                               num_stages=stages)
        LAST_KERNELS["dkdv"] = "triton"
    if split:
        # 64-key blocks of the partials (rows nsb * bn per slot): a 128-key fp32 tile is too big for the sum kernel
        sb = min(bn, 64)
        _bwd_sink_sum_kernel[(nsb * bn // sb, heads)](dkp, dvp, dk, dv, geo.cu_k, *geo.sk, *geo.strides(v), geo.lk,
                                                      geo.hkv, nsb * bn // sb, parts, D=geo.d, BLOCK_D=geo.block_d,
                                                      BLOCK_N=sb, VARLEN=geo.varlen)
    return dq, dk, dv


class SWAAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, w, s, scale):
        geo = Geometry(q, k, cu_q, cu_k, max_q, max_k)
        o, lse2 = forward(q, k, v, geo, w, s, scale)
        ctx.save_for_backward(q, k, v, o, lse2)
        ctx.geo, ctx.ws = geo, (w, s, scale)
        ctx.mark_non_differentiable(lse2)
        return o, lse2

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse2 = ctx.saved_tensors
        dq, dk, dv = backward(do, q, k, v, o, lse2, ctx.geo, *ctx.ws)
        return dq, dk, dv, None, None, None, None, None, None, None


def triton_attention(q, k, v, *, window, keep_first, scale, return_lse, mask=None, fa_from=None):
    """Dense layout entry point (the registry's): decode shapes without grad take the split-KV kernel."""
    from .decode import triton_decode
    grad = needs_grad(q, k, v)
    q, k, v = (kernel_layout(t, grad) for t in (q, k, v))
    sc = softmax_scale(q, scale)
    if not grad and q.shape[2] <= 16 and k.shape[2] >= 256:
        out, lse2 = triton_decode(q, k, v, window=window, keep_first=keep_first, scale=sc, base2_lse=True)
    else:
        w, s = window_args(window, keep_first)
        out, lse2 = SWAAFunction.apply(q, k, v, None, None, None, None, w, s, sc)
    return (out, lse2 * math.log(2.0)) if return_lse else out


def swaa_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, *,
                          sliding_window_size=None, keep_first: int = 0, scale=None, return_lse: bool = False):
    """Packed sequences: q (total_q, Hq, D), k/v (total_k, Hkv, D); sequence i is rows cu[i]:cu[i+1].

    Each sequence follows the SWAA rule on its own positions (queries aligned to the end of its keys). Returns
    out (total_q, Hq, D) [, lse (Hq, total_q) natural log]. Differentiable.
    """
    from . import triton_available
    check_window(sliding_window_size, keep_first)
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape or q.shape[1] % k.shape[1]:
        raise ValueError(f"varlen expects q (T, Hq, D), k/v (T, Hkv, D) with Hq % Hkv == 0; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    for name, cu, t in (("cu_seqlens_q", cu_seqlens_q, q), ("cu_seqlens_k", cu_seqlens_k, k)):
        if cu.dtype != torch.int32 or cu.dim() != 1 or int(cu[-1]) != t.shape[0]:
            raise ValueError(f"{name} must be int32 (num_seqs + 1,) ending at {t.shape[0]}; got {cu.dtype} "
                             f"{tuple(cu.shape)} ending at {int(cu[-1])}")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
    why = triton_available()
    if why:
        raise RuntimeError(f"the Triton kernels cannot run here: {why}")
    grad = needs_grad(q, k, v)
    q, k, v = (kernel_layout(t, grad) for t in (q, k, v))
    w, s = window_args(sliding_window_size, keep_first)
    out, lse2 = SWAAFunction.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, w, s,
                                   softmax_scale(q, scale))
    return (out, lse2 * math.log(2.0)) if return_lse else out
