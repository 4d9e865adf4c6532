"""Backward kernels (FlashAttention-2 style, no atomics): dK/dV per key block, dQ per query block.

dK/dV: one program per (key block, sequence, KV head) loops over the GQA group's query heads and over the query
blocks that can see its keys: positions ``[n0, n1 - 1 + W)`` for window keys, and every later query for a block
holding sink keys (``n0 < S``). dQ: one program per (query block, sequence, query head), the forward's key runs.
Scores are recomputed from the saved base-2 LSE; ``delta = rowsum(dO * O)`` comes from the wrapper.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._fwd import _dot, _key_runs, _rule_mask, _seq_bounds


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, cu_q, cu_k,
                     stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                     stride_lb, stride_lh, stride_lm,
                     Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, qk_scale,
                     D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     VARLEN: tl.constexpr, DOT: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    kvh = pid_bh % HKV
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    n_start = pid_n * BLOCK_N
    if n_start >= Lk:
        return
    off = Lk - Lq
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    col_ok = offs_n < Lk
    kv_mask = col_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * stride_kb + kvh * stride_kh + (k0 + offs_n)[:, None] * stride_kn + offs_d[None, :],
                mask=kv_mask, other=0.0)                                             # (BN, D)
    v = tl.load(V + b * stride_vb + kvh * stride_vh + (k0 + offs_n)[:, None] * stride_vn + offs_d[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # query positions that may see a key of this block
    n_last = tl.minimum(n_start + BLOCK_N, Lk) - 1
    p_lo = n_start
    p_hi = tl.where(n_start < S, Lk, tl.minimum(Lk, n_last + W))                  # exclusive
    m_lo = tl.maximum(p_lo - off, 0)
    m_lo = (m_lo // BLOCK_M) * BLOCK_M
    m_hi = tl.minimum(p_hi - off, Lq)
    for g in range(0, GROUPS):
        h = kvh * GROUPS + g
        for start_m in range(m_lo, m_hi, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < Lq
            pos = rows + off
            q = tl.load(Q + b * stride_qb + h * stride_qh + (q0 + rows)[:, None] * stride_qm + offs_d[None, :],
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)              # (BM, D)
            do = tl.load(DO + b * stride_ob + h * stride_oh + (q0 + rows)[:, None] * stride_om + offs_d[None, :],
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            lse = tl.load(LSE + b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm, mask=row_ok,
                          other=float("inf"))
            delta = tl.load(DELTA + b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm, mask=row_ok, other=0.0)
            qkT = _dot(k, tl.trans(q), None, DOT)                                     # (BN, BM)
            vis = _rule_mask(pos[None, :], offs_n[:, None], Lk, W, S) & row_ok[None, :]
            pT = tl.where(vis, tl.math.exp2(qkT * qk_scale - lse[None, :]), 0.0)
            dv = _dot(pT.to(do.dtype), do, dv, DOT)
            dpT = _dot(v, tl.trans(do), None, DOT)
            dsT = pT * (dpT - delta[None, :])
            dk = _dot(dsT.to(q.dtype), q, dk, DOT)
    dk = dk * (qk_scale * 0.6931471805599453)                                       # back to natural-log scale
    tl.store(DK + b * stride_kb + kvh * stride_kh + (k0 + offs_n)[:, None] * stride_kn + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + b * stride_vb + kvh * stride_vh + (k0 + offs_n)[:, None] * stride_vn + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, start, end, pos, offs_n, d_ok,
                Lk, W, S, qk_scale, MODE: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        kv_ok = cols < Lk
        kT = tl.load(k_ptrs + start_n * stride_kn, mask=kv_ok[None, :] & d_ok[:, None], other=0.0)   # (D, BN)
        vT = tl.load(v_ptrs + start_n * stride_vn, mask=kv_ok[None, :] & d_ok[:, None], other=0.0)
        qk = _dot(q, kT, None, DOT)
        dp = _dot(do, vT, None, DOT)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        if MODE == 1:
            p = tl.where((cols < S)[None, :], p, 0.0)
        if MODE == 2:
            p = tl.where(_rule_mask(pos[:, None], cols[None, :], Lk, W, S), p, 0.0)
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(kT.dtype), tl.trans(kT), dq, DOT)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, cu_q, cu_k,
                   stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                   stride_lb, stride_lh, stride_lm,
                   Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                   D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   VARLEN: tl.constexpr, DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUPS
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    m_start = pid_m * BLOCK_M
    if m_start >= Lq:
        return
    off = Lk - Lq
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < Lq
    pos = offs_m + off
    io_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + (q0 + offs_m)[:, None] * stride_qm + offs_d[None, :],
                mask=io_mask, other=0.0)
    do = tl.load(DO + b * stride_ob + h * stride_oh + (q0 + offs_m)[:, None] * stride_om + offs_d[None, :],
                 mask=io_mask, other=0.0)
    lse = tl.load(LSE + b * stride_lb + h * stride_lh + (q0 + offs_m) * stride_lm, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + b * stride_lb + h * stride_lh + (q0 + offs_m) * stride_lm, mask=row_ok, other=0.0)
    k_ptrs = K + b * stride_kb + kvh * stride_kh + (k0 + offs_n)[None, :] * stride_kn + offs_d[:, None]
    v_ptrs = V + b * stride_vb + kvh * stride_vh + (k0 + offs_n)[None, :] * stride_vn + offs_d[:, None]
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    p_max, sink_hi, ws, int_lo, int_hi, hi = _key_runs(m_start, Lq, Lk, W, S, BLOCK_M, BLOCK_N)
    if p_max >= 0:
        dq = _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, sink_hi, pos,
                         offs_n, d_ok, Lk, W, S, qk_scale, 1, BLOCK_N, DOT)
        if int_lo < int_hi:
            dq = _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, ws, int_lo, pos, offs_n,
                             d_ok, Lk, W, S, qk_scale, 2, BLOCK_N, DOT)
            dq = _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, int_lo, int_hi, pos,
                             offs_n, d_ok, Lk, W, S, qk_scale, 0, BLOCK_N, DOT)
            dq = _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, int_hi, hi, pos, offs_n,
                             d_ok, Lk, W, S, qk_scale, 2, BLOCK_N, DOT)
        else:
            dq = _bwd_dq_run(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, ws, hi, pos, offs_n,
                             d_ok, Lk, W, S, qk_scale, 2, BLOCK_N, DOT)
    dq = dq * (qk_scale * 0.6931471805599453)
    tl.store(DQ + b * stride_qb + h * stride_qh + (q0 + offs_m)[:, None] * stride_qm + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=io_mask)
