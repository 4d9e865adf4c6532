"""Hopper dQ kernel in Gluon: ``_bwd_dq_kernel``'s work laid out like the Gluon forward (docs/kernels.md,
"Backward").

Why: the triton-language dQ kernel runs its three products on 64 x 64 tiles in 4-warp programs whose loads and
products one software pipeline interleaves; warp-specialised loaders and two consumers per CTA let the products of
one tile overlap the exponentials of the next, as in the Gluon forward.

Persistent, the forward's tile walk (``_gl_tile``: 128 queries of one (sequence, query head), the CTA's sink tiles
then its window), five partitions:

    consumer 0  (4 warps, 240 registers)   dQ of queries [m0, m0 + 64)
    consumer 1  (4 warps, 240 registers)   dQ of queries [m0 + 64, m0 + 128)
    K loader    (1 warp)                   key tiles (BLOCK_N rows) into a ring, the forward's ``_gl_loader``
    V loader    (1 warp)                   value tiles into a ring
    Q loader    (1 warp)                   each tile's Q and dO rows, one buffer pair per consumer

Per key tile j (after the first, which issues only its S and dP) a consumer issues S_j = Q K_j^T, then
dQ += dS_{j-1} K_{j-1} (dS of the tile before, kept in registers as the A operand), then dP_j = dO V_j^T; it waits
for S_j alone and computes P_j = exp2(S_j - LSE) while the other two run, then waits for both, frees K_{j-1} and
V_j, and forms dS_j = P_j (dP_j - delta) for the next tile. The last tile's dQ product follows the loop.
Registers per consumer thread: dQ 64 x D fp32, S and dP 64 x BLOCK_N fp32, dS as the A operand: with BLOCK_N = 64
and D = 128, 64 + 32 + 32 + 16. Each consumer first computes delta = rowsum(dO * O) for its rows (O by
pointer loads, dO from its shared buffer) and stores delta and the LSE with +inf for rows that saw no key, which the
dK/dV kernel launched after it reads, as ``_bwd_dq_kernel`` does.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

from ._bwd import _row_stats_store
from ._fwd import _block_start, _key_runs, _needs_mask, _rule_mask
from ._fwd_gluon import _gl_loader, _gl_q_loader, _gl_rings, _gl_tile


@gluon.jit
def _gdq_probs(sc, lse, start_n, offs_n, pos, sink_full, int_lo, int_hi, Lk, W, S, qk_scale):
    """P of one key tile from its scores and the rows' base-2 LSE, the rule applied on sink and edge tiles only."""
    p = gl.exp2(sc * qk_scale - lse[:, None])
    if _needs_mask(start_n, sink_full, int_lo, int_hi):
        p = gl.where(_rule_mask(pos[:, None], (start_n + offs_n)[None, :], Lk, W, S), p, 0.0)
    return p


@gluon.jit
def _gdq_consumer(k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, do_bufs, q_ready, q_empty, LSE, DELTA,
                  DQ, O, LSE_B, cu_q, cu_k, n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                  stride_qb, stride_qh, stride_qm, stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                  WG: gl.constexpr, D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr,
                  V_STAGES: gl.constexpr, VARLEN: gl.constexpr):
    BM: gl.constexpr = 64
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    a_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=a_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    # the preamble's rows: 8 contiguous columns (16 bytes) per thread, a warp across two rows of 128
    blk: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // D, D // 8], [4, 1], [1, 0])
    q_smem = q_bufs.index(WG)
    do_smem = do_bufs.index(WG)
    offs_n = gl.arange(0, BLOCK_N, col_s)
    zero = gl.zeros([BM, BLOCK_N], gl.float32, s_layout)
    kv_it = 0
    tt = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        valid, b, h, kvh, q0, Lq, k0, Lk, m0, n_sink, ws, n_iter = _gl_tile(t, n_mg, cu_q, cu_k, Lq_fixed, Lk_fixed,
                                                                            H, GROUPS, W, S, BLOCK_N, VARLEN)
        if valid:
            m_start = m0 + WG * BM
            rows = m_start + gl.arange(0, BM, row_s)
            pos = rows + (Lk - Lq)
            # this warpgroup's own bounds decide which of the tile's key tiles it masks
            p_max, sink_hi, ws_own, int_lo, int_hi, hi, sink_full = _key_runs(m_start, Lq, Lk, W, S, BM, BLOCK_N)
            lrow_base = b * stride_lb + h * stride_lh
            # O and the forward's LSE first, so that their loads overlap the wait for dO
            rows_b = m_start + gl.arange(0, BM, gl.SliceLayout(1, blk))
            cols_b = gl.arange(0, D, gl.SliceLayout(0, blk))
            ok_b = rows_b < Lq
            o = gl.load(O + b * stride_ob + h * stride_oh + (q0 + rows_b)[:, None] * stride_om + cols_b[None, :],
                        mask=ok_b[:, None], other=0.0)
            lrow_b = lrow_base + (q0 + rows_b) * stride_lm
            lse_f = gl.load(LSE + lrow_b, mask=ok_b, other=float("-inf"))
            mbarrier.wait(q_ready.index(WG), tt & 1)
            delta_b, lse_b = _row_stats_store(o, do_smem.load(blk), lse_f, DELTA, LSE_B, lrow_b, ok_b)
            delta = gl.convert_layout(delta_b, row_s)
            lse = gl.convert_layout(lse_b, row_s)
            dq = gl.zeros([BM, D], gl.float32, a_layout)
            if n_iter > 0:
                # key tile 0: its S and dP, and dS_0 for the next iteration's dQ product
                ks = kv_it % K_STAGES
                vs = kv_it % V_STAGES
                mbarrier.wait(k_ready.index(ks), (kv_it // K_STAGES) & 1)
                sc = warpgroup_mma(q_smem, k_bufs.index(ks).permute((1, 0)), zero, use_acc=False, is_async=True)
                mbarrier.wait(v_ready.index(vs), (kv_it // V_STAGES) & 1)
                dp = warpgroup_mma(do_smem, v_bufs.index(vs).permute((1, 0)), zero, use_acc=False, is_async=True)
                sc = warpgroup_mma_wait(1, deps=(sc,))
                p = _gdq_probs(sc, lse, _block_start(0, n_sink, ws, BLOCK_N), offs_n, pos,
                               sink_full, int_lo, int_hi, Lk, W, S, qk_scale)
                dp = warpgroup_mma_wait(0, deps=(dp,))
                mbarrier.arrive(v_empty.index(vs), count=1)
                ds = gl.convert_layout((p * (dp - delta[:, None])).to(q_smem.dtype), op_layout)
                for it in range(1, n_iter):
                    j = kv_it + it
                    ks = j % K_STAGES
                    vs = j % V_STAGES
                    kp = (j - 1) % K_STAGES
                    # S_j, then dQ += dS_{j-1} K_{j-1}, then dP_j: P_j's exponentials run while the other two compute
                    mbarrier.wait(k_ready.index(ks), (j // K_STAGES) & 1)
                    sc = warpgroup_mma(q_smem, k_bufs.index(ks).permute((1, 0)), zero, use_acc=False, is_async=True)
                    dq = warpgroup_mma(ds, k_bufs.index(kp), dq, is_async=True)
                    mbarrier.wait(v_ready.index(vs), (j // V_STAGES) & 1)
                    dp = warpgroup_mma(do_smem, v_bufs.index(vs).permute((1, 0)), zero, use_acc=False, is_async=True)
                    sc = warpgroup_mma_wait(2, deps=(sc,))                # groups complete in order
                    p = _gdq_probs(sc, lse, _block_start(it, n_sink, ws, BLOCK_N), offs_n, pos,
                                   sink_full, int_lo, int_hi, Lk, W, S, qk_scale)
                    dq, dp = warpgroup_mma_wait(0, deps=(dq, dp))
                    mbarrier.arrive(k_empty.index(kp), count=1)
                    mbarrier.arrive(v_empty.index(vs), count=1)
                    ds = gl.convert_layout((p * (dp - delta[:, None])).to(q_smem.dtype), op_layout)
                mbarrier.arrive(q_empty.index(WG), count=1)              # Q and dO: the loader may fetch the next
                ks = (kv_it + n_iter - 1) % K_STAGES
                dq = warpgroup_mma(ds, k_bufs.index(ks), dq, is_async=True)
                dq = warpgroup_mma_wait(0, deps=(dq,))
                mbarrier.arrive(k_empty.index(ks), count=1)
            else:
                mbarrier.arrive(q_empty.index(WG), count=1)
            kv_it += n_iter
            tt += 1
            dq = dq * (qk_scale * 0.6931471805599453)                     # back to natural-log scale
            rows_a = m_start + gl.arange(0, BM, gl.SliceLayout(1, a_layout))
            cols_a = gl.arange(0, D, gl.SliceLayout(0, a_layout))
            gl.store(DQ + b * stride_qb + h * stride_qh + (q0 + rows_a)[:, None] * stride_qm + cols_a[None, :],
                     dq.to(DQ.dtype.element_ty), mask=(rows_a < Lq)[:, None])


@gluon.jit
def _bwd_dq_gluon_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DQ, O, LSE_B, cu_q, cu_k,
                         stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                         stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                         stride_lb, stride_lh, stride_lm,
                         Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale, n_tiles, n_mg,
                         D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
                         VARLEN: gl.constexpr):
    """Grid: (CTAs,) as the Gluon forward's (``n_tiles`` = query tiles x sequences x KV heads, ``n_mg`` = query
    tiles x GROUPS). LSE: the forward's base-2 LSE; delta and LSE_B are written. O and dO share strides (the wrapper
    makes it so); DQ has q's."""
    k_bufs, v_bufs, q_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty = _gl_rings(
        k_desc, v_desc, q_desc, D, BLOCK_N, K_STAGES, V_STAGES)
    do_bufs = gl.allocate_shared_memory(do_desc.dtype, [2, 64, D], do_desc.layout)     # beside Q, on its barriers

    gl.warp_specialize([
        (_gdq_consumer, (k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, do_bufs, q_ready, q_empty, LSE,
                         DELTA, DQ, O, LSE_B, cu_q, cu_k, n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                         stride_qb, stride_qh, stride_qm, stride_ob, stride_oh, stride_om, stride_lb, stride_lh,
                         stride_lm, 0, D, BLOCK_N, K_STAGES, V_STAGES, VARLEN)),
        (_gdq_consumer, (k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, do_bufs, q_ready, q_empty, LSE,
                         DELTA, DQ, O, LSE_B, cu_q, cu_k, n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                         stride_qb, stride_qh, stride_qm, stride_ob, stride_oh, stride_om, stride_lb, stride_lh,
                         stride_lm, 1, D, BLOCK_N, K_STAGES, V_STAGES, VARLEN)),
        (_gl_loader, (k_desc, k_bufs, k_ready, k_empty, cu_q, cu_k, n_tiles, n_mg, stride_kb, stride_kh, stride_kn,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, K_STAGES, VARLEN)),
        (_gl_loader, (v_desc, v_bufs, v_ready, v_empty, cu_q, cu_k, n_tiles, n_mg, stride_vb, stride_vh, stride_vn,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, V_STAGES, VARLEN)),
        (_gl_q_loader, (q_desc, q_bufs, q_ready, q_empty, cu_q, cu_k, n_tiles, n_mg, stride_qb, stride_qh, stride_qm,
                        Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, VARLEN, do_desc, do_bufs, stride_ob, stride_oh,
                        stride_om, True)),
    ], [4, 1, 1, 1], [240, 24, 24, 24])
