"""Backward kernels (FlashAttention-2 style, no atomics): dK/dV per key block, dQ per query block.

dK/dV: one program per (key block, sequence, KV head) runs one software-pipelined loop over the GQA group's query
heads and the query blocks that can see its keys: positions ``[n0, n1 - 1 + W)`` for window keys, and every later
query for a block holding sink keys (``n0 < S``). Those later queries see only the sinks, and there are up to L of
them against W for any other block: one program for them would run L / W times longer than the rest and end the
launch alone (docs/kernels.md, "Backward"). So they are split into chunks of
about a window's work, each its own program writing fp32 partial dK/dV for the sink block, which
``_bwd_sink_sum_kernel`` sums in a fixed order. Only blocks on the diagonal, the window's end or the sequence's
end apply the rule; the others (every pair visible) skip the mask. dQ: one program per (query block, sequence,
query head), the forward's single loop over sink and window key blocks, with the query heads of one KV head side
by side in the grid. Scores are recomputed from the saved base-2 LSE. ``delta = rowsum(dO * O)`` and the backward
LSE: the dQ kernel computes them for its own rows and runs first, so no separate pass reads O and dO. Q/K/V/dO tiles
come through TMA descriptors when the wrapper could build them (``TMA``), else through pointer loads.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._fwd import _block_start, _dot, _key_runs, _needs_mask, _query_program, _rule_mask, _seq_bounds, _tma_origin


@triton.jit
def _load_rows(src, r, c, base, rows, stride, offs_d, row_ok, d_ok, TMA: tl.constexpr):
    """(len(rows), BLOCK_D) tile: from a TMA descriptor at row r, column c, or by masked pointer loads from
    ``src + base`` (base: the (sequence, head) offset in elements)."""
    if TMA:
        return src.load([r, c])
    else:
        return tl.load(src + base + rows[:, None] * stride + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                       other=0.0)


@triton.jit
def _dkdv_block(pid_n, NKB, NSB, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    """(far, chunk-program index, first key) of dK/dV program ``pid_n``. With SPLIT, programs [0, NKB) are one per
    key block, and programs NKB + c * NSB + sb ("far") take chunk c of sink block sb's later queries."""
    if SPLIT:
        far = pid_n >= NKB
    else:
        far = pid_n < 0
    j = tl.maximum(pid_n - NKB, 0)
    return far, j, tl.where(far, (j % NSB) * BLOCK_N, pid_n * BLOCK_N)


@triton.jit
def _dkdv_queries(n_start, far, j, Lq, Lk, W, S, NSB, CHUNK, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  SPLIT: tl.constexpr):
    """The query blocks a dK/dV program visits for the key block at ``n_start``: (last key, block all sinks,
    writes partials, first query row, query blocks)."""
    off = Lk - Lq
    n_last = tl.minimum(n_start + BLOCK_N, Lk) - 1
    all_sinks = n_start + BLOCK_N <= S
    has_sink = n_start < S
    m_lo = (tl.maximum(n_start - off, 0) // BLOCK_M) * BLOCK_M
    # query rows up to the window's end (positions < n_last + W); with sinks and no split, every later row too
    if SPLIT:
        split_here = has_sink
        p_hi = tl.minimum(Lk, n_last + W)
    else:
        split_here = n_start < 0
        p_hi = tl.where(has_sink, Lk, tl.minimum(Lk, n_last + W))
    m_hi = tl.minimum(p_hi - off, Lq)
    n_m = tl.maximum(tl.cdiv(m_hi - m_lo, BLOCK_M), 0)
    if far:                         # chunk c of the query blocks after the window's (whole blocks: no overlap)
        m_lo = m_lo + (n_m + (j // NSB) * CHUNK) * BLOCK_M
        n_m = tl.maximum(tl.minimum(tl.cdiv(Lq - m_lo, BLOCK_M), CHUNK), 0)
    return n_last, all_sinks, split_here, m_lo, n_m


@triton.jit
def _row_stats_store(o, do, lse, DELTA, LSE_B, lrow, ok):
    """The backward's row statistics from O, dO and the forward's base-2 LSE of some rows: delta = rowsum(dO * O) in
    fp32, and the LSE with rows that saw no key (-inf) set to +inf so that their recomputed probabilities are 0;
    stored at ``lrow`` where ``ok`` for the dK/dV kernel and returned. Shared by both dQ kernels' preambles."""
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    lse_b = tl.where(lse == float("-inf"), float("inf"), lse)
    tl.store(DELTA + lrow, delta, mask=ok)
    tl.store(LSE_B + lrow, lse_b, mask=ok)
    return delta, lse_b


@triton.jit
def _dkdv_store(dk, dv, rows, cols, to_partial, slot, pid_bh, DKP, DVP, DK, DV, b, kvh, k0, Lk, stride_kb, stride_kh,
                stride_kn, stride_vb, stride_vh, stride_vn, NSB, D, BLOCK_N: tl.constexpr, ROW: tl.constexpr):
    """A key block's dK/dV (``rows``: its keys' offsets in the sequence, ``cols``: 0..ROW): with ``to_partial`` the
    fp32 partial of slot ``slot`` (rows NSB * BLOCK_N per slot and sequence x KV head, ROW wide) that
    ``_bwd_sink_sum_kernel`` sums, else DK and DV in their dtype. Shared by both dK/dV kernels and the sum."""
    if to_partial:
        rows_p = ((slot * tl.num_programs(1) + pid_bh).to(tl.int64) * (NSB * BLOCK_N) + rows) * ROW
        tl.store(DKP + rows_p[:, None] + cols[None, :], dk)
        tl.store(DVP + rows_p[:, None] + cols[None, :], dv)
    else:
        ok = (rows < Lk)[:, None] & (cols < D)[None, :]
        tl.store(DK + b * stride_kb + kvh * stride_kh + (k0 + rows)[:, None] * stride_kn + cols[None, :],
                 dk.to(DK.dtype.element_ty), mask=ok)
        tl.store(DV + b * stride_vb + kvh * stride_vh + (k0 + rows)[:, None] * stride_vn + cols[None, :],
                 dv.to(DV.dtype.element_ty), mask=ok)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, cu_q, cu_k,
                     stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                     stride_lb, stride_lh, stride_lm,
                     Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, qk_scale,
                     DKP, DVP, NKB, NSB, CHUNK,
                     D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     VARLEN: tl.constexpr, DOT: tl.constexpr, TMA: tl.constexpr = False,
                     SPLIT: tl.constexpr = False):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    kvh = pid_bh % HKV
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    # SPLIT: programs [0, NKB) are one per key block; a block holding sink keys takes only the queries up to the
    # end of its window there, and programs NKB + c * NSB + sb take chunk c (CHUNK query blocks) of the later
    # queries, which see only sinks, for sink block sb. Sink blocks write fp32 partials to DKP/DVP
    # (1 + chunks, sequences x KV heads, NSB * BLOCK_N, BLOCK_D) that _bwd_sink_sum_kernel sums.
    far, j, n_start = _dkdv_block(pid_n, NKB, NSB, BLOCK_N, SPLIT)
    if n_start >= Lk:
        return
    off = Lk - Lq
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    col_ok = offs_n < Lk
    if TMA:
        kr, kc = _tma_origin(b, kvh, stride_kb, stride_kh, stride_kn)
        vr, vc = _tma_origin(b, kvh, stride_vb, stride_vh, stride_vn)
    else:
        kr, kc, vr, vc = 0, 0, 0, 0
    k = _load_rows(K, kr + k0 + n_start, kc, b * stride_kb + kvh * stride_kh, k0 + offs_n, stride_kn, offs_d,
                   col_ok, d_ok, TMA)                                                # (BN, D)
    v = _load_rows(V, vr + k0 + n_start, vc, b * stride_vb + kvh * stride_vh, k0 + offs_n, stride_vn, offs_d,
                   col_ok, d_ok, TMA)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    n_last, all_sinks, split_here, m_lo, n_m = _dkdv_queries(n_start, far, j, Lq, Lk, W, S, NSB, CHUNK, BLOCK_M,
                                                             BLOCK_N, SPLIT)
    # one loop over (query head of the group, query block)
    for it in tl.range(0, GROUPS * n_m):
        g = it // n_m
        start_m = m_lo + (it - g * n_m) * BLOCK_M
        h = kvh * GROUPS + g
        rows = start_m + offs_m
        row_ok = rows < Lq
        pos = rows + off
        if TMA:
            qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
            dr, dc = _tma_origin(b, h, stride_ob, stride_oh, stride_om)
        else:
            qr, qc, dr, dc = 0, 0, 0, 0
        q = _load_rows(Q, qr + q0 + start_m, qc, b * stride_qb + h * stride_qh, q0 + rows, stride_qm, offs_d,
                       row_ok, d_ok, TMA)                                           # (BM, D)
        do = _load_rows(DO, dr + q0 + start_m, dc, b * stride_ob + h * stride_oh, q0 + rows, stride_om,
                        offs_d, row_ok, d_ok, TMA)
        lse = tl.load(LSE + b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm, mask=row_ok,
                      other=float("inf"))
        delta = tl.load(DELTA + b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm, mask=row_ok, other=0.0)
        qkT = _dot(k, tl.trans(q), None, DOT)                                         # (BN, BM)
        pT = tl.math.exp2(qkT * qk_scale - lse[None, :])
        # every pair visible: the first row sees the block's last key, the last row its first (or all are sinks)
        inner = (start_m + off >= n_last) & ((start_m + BLOCK_M - 1 + off - n_start < W) | all_sinks)
        if (not inner) | (start_m + BLOCK_M > Lq):
            vis = _rule_mask(pos[None, :], offs_n[:, None], Lk, W, S) & row_ok[None, :]
            pT = tl.where(vis, pT, 0.0)
        dv = _dot(pT.to(do.dtype), do, dv, DOT)
        dpT = _dot(v, tl.trans(do), None, DOT)
        dsT = pT * (dpT - delta[None, :])
        dk = _dot(dsT.to(q.dtype), q, dk, DOT)
    dk = dk * (qk_scale * 0.6931471805599453)                                       # back to natural-log scale
    # a sink block's partial goes to slot 0 (window rows) or 1 + chunk
    _dkdv_store(dk, dv, offs_n, offs_d, split_here, tl.where(far, 1 + j // NSB, 0), pid_bh, DKP, DVP, DK, DV, b, kvh,
                k0, Lk, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, NSB, D, BLOCK_N, BLOCK_D)


@triton.jit
def _bwd_sink_sum_kernel(DKP, DVP, DK, DV, cu_k, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                         Lk_fixed, HKV, NSB, PARTS, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                         VARLEN: tl.constexpr):
    """dK/dV of the sink blocks: the sum of the split dK/dV kernel's fp32 partials, in a fixed order
    (deterministic), stored like the main kernel stores the other blocks."""
    sb = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    kvh = pid_bh % HKV
    _q0, _lq, k0, Lk = _seq_bounds(cu_k, cu_k, b, Lk_fixed, Lk_fixed, VARLEN)
    n_start = sb * BLOCK_N
    if n_start >= Lk:
        return
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for part in range(0, PARTS):
        rows_p = ((part * tl.num_programs(1) + pid_bh).to(tl.int64) * (NSB * BLOCK_N) + offs_n) * BLOCK_D
        dk += tl.load(DKP + rows_p[:, None] + offs_d[None, :])
        dv += tl.load(DVP + rows_p[:, None] + offs_d[None, :])
    _dkdv_store(dk, dv, offs_n, offs_d, False, 0, pid_bh, DKP, DVP, DK, DV, b, kvh, k0, Lk, stride_kb, stride_kh,
                stride_kn, stride_vb, stride_vh, stride_vn, NSB, D, BLOCK_N, BLOCK_D)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, cu_q, cu_k,
                   stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                   stride_lb, stride_lh, stride_lm,
                   Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale, O, LSE_B,
                   D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   VARLEN: tl.constexpr, DOT: tl.constexpr, TMA: tl.constexpr = False):
    """dQ of one (query block, sequence, query head), after the row statistics of its rows (one program per rows and
    head: each row once): LSE is the forward's base-2 LSE; the program stores delta = rowsum(dO * O) to DELTA and the
    LSE with +inf for rows that saw nothing to LSE_B, which the dK/dV kernel launched after it reads. (O has dO's
    strides.)"""
    pid_m, b, h, kvh = _query_program(H, GROUPS)                  # the forward's grid
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
    if TMA:
        qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
        dr, dc = _tma_origin(b, h, stride_ob, stride_oh, stride_om)
        kr, kc = _tma_origin(b, kvh, stride_kb, stride_kh, stride_kn)
        vr, vc = _tma_origin(b, kvh, stride_vb, stride_vh, stride_vn)
    else:
        qr, qc, dr, dc, kr, kc, vr, vc = 0, 0, 0, 0, 0, 0, 0, 0
    lrow = b * stride_lb + h * stride_lh + (q0 + offs_m) * stride_lm
    # O and the forward's LSE first, so that their loads overlap Q's and dO's
    o = tl.load(O + b * stride_ob + h * stride_oh + (q0 + offs_m)[:, None] * stride_om + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    lse = tl.load(LSE + lrow, mask=row_ok, other=float("-inf"))
    q = _load_rows(Q, qr + q0 + m_start, qc, b * stride_qb + h * stride_qh, q0 + offs_m, stride_qm, offs_d,
                   row_ok, d_ok, TMA)
    do = _load_rows(DO, dr + q0 + m_start, dc, b * stride_ob + h * stride_oh, q0 + offs_m, stride_om, offs_d,
                    row_ok, d_ok, TMA)
    delta, lse = _row_stats_store(o, do, lse, DELTA, LSE_B, lrow, row_ok)
    k_base = b * stride_kb + kvh * stride_kh
    v_base = b * stride_vb + kvh * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    p_max, sink_hi, ws, int_lo, int_hi, hi, sink_full = _key_runs(m_start, Lq, Lk, W, S, BLOCK_M, BLOCK_N)
    if p_max >= 0:
        n_sink = tl.cdiv(sink_hi, BLOCK_N)
        for it in tl.range(0, n_sink + tl.cdiv(hi - ws, BLOCK_N)):
            start_n = tl.multiple_of(_block_start(it, n_sink, ws, BLOCK_N), BLOCK_N)
            cols = start_n + offs_n
            kv_ok = cols < Lk
            k = _load_rows(K, kr + k0 + start_n, kc, k_base, k0 + cols, stride_kn, offs_d, kv_ok, d_ok, TMA)
            v = _load_rows(V, vr + k0 + start_n, vc, v_base, k0 + cols, stride_vn, offs_d, kv_ok, d_ok, TMA)
            qk = _dot(q, tl.trans(k), None, DOT)                                      # (BM, BN)
            dp = _dot(do, tl.trans(v), None, DOT)
            p = tl.math.exp2(qk * qk_scale - lse[:, None])
            if _needs_mask(start_n, sink_full, int_lo, int_hi):                      # sink or edge block
                p = tl.where(_rule_mask(pos[:, None], cols[None, :], Lk, W, S), p, 0.0)
            ds = p * (dp - delta[:, None])
            dq = _dot(ds.to(k.dtype), k, dq, DOT)
    dq = dq * (qk_scale * 0.6931471805599453)
    tl.store(DQ + b * stride_qb + h * stride_qh + (q0 + offs_m)[:, None] * stride_qm + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
