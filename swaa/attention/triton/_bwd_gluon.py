"""Hopper dK/dV kernel in Gluon, the forward's layout carried over to the backward (sm_90, head_dim 64 and 128).

Why: the triton-language dK/dV kernel holds dK and dV (2 x 64 x 128 fp32) plus the score tiles in one 4-warp
program capped at 255 registers, and spills; here two 240-register consumers share a CTA (docs/kernels.md,
"Backward").

One CTA per 128-key block (and, as in ``_bwd_dkdv_kernel``, extra CTAs for the chunks of a sink block's later
queries, writing fp32 partials) runs three partitions:

    consumer 0  (4 warps, 240 registers)   dK, dV of keys [n0, n0 + 64)
    consumer 1  (4 warps, 240 registers)   dK, dV of keys [n0 + 64, n0 + 128)
    loader      (1 warp, 24 registers)     TMA of the block's K and V once, then a ring of (Q, dO) query tiles

Both consumers walk the same query tiles (the block's, over the GQA group's heads) and share each (Q, dO) buffer,
released when both have arrived (count 2). Per tile a consumer issues S^T = K Q^T and dP^T = V dO^T together,
computes P^T while dP^T finishes, issues dV += P^T dO, then dS^T and dK += dS^T Q, with P^T and dS^T in registers as
the A operands. Scalar bounds come from the helpers ``_bwd_dkdv_kernel`` uses, so both visit the same query blocks.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from ._bwd import _dkdv_block, _dkdv_queries, _dkdv_store
from ._fwd import _rule_mask, _seq_bounds, _tma_origin

_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared      # Triton 3.6 / later names
KEY_ROWS = 128          # keys per CTA, 64 per consumer


@gluon.jit
def _glb_program(cu_q, cu_k, Lq_fixed, Lk_fixed, HKV, NKB, NSB, BLOCK_N: gl.constexpr, VARLEN: gl.constexpr,
                 SPLIT: gl.constexpr):
    """The program's (sequence x KV head, sequence, KV head, sequence bounds, far, chunk index, first key)."""
    pid_bh = gl.program_id(1)
    b = pid_bh // HKV
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    far, j, n_start = _dkdv_block(gl.program_id(0), NKB, NSB, BLOCK_N, SPLIT)
    return pid_bh, b, pid_bh % HKV, q0, Lq, k0, Lk, far, j, n_start


@gluon.jit
def _glb_row_stats(LSE, DELTA, start_m, b, h, q0, Lq, stride_lb, stride_lh, stride_lm, BLOCK_M: gl.constexpr,
                   layout: gl.constexpr):
    """The LSE and delta of query head ``h``'s tile at ``start_m``, one element per thread: a pointer tensor in the
    score tiles' column layout would cost registers the products need."""
    rows = start_m + gl.arange(0, BLOCK_M, layout)
    ok = rows < Lq
    base = b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm
    return gl.load(LSE + base, mask=ok, other=float("inf")), gl.load(DELTA + base, mask=ok, other=0.0)


@gluon.jit
def _glb_loader(q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_smem, v_smem, kv_bar, ready, empty, cu_q, cu_k,
                stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                stride_ob, stride_oh, stride_om, Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, NKB, NSB, CHUNK,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, VARLEN: gl.constexpr,
                SPLIT: gl.constexpr):
    pid_bh, b, kvh, q0, Lq, k0, Lk, far, j, n_start = _glb_program(cu_q, cu_k, Lq_fixed, Lk_fixed, HKV, NKB, NSB,
                                                                   BLOCK_N, VARLEN, SPLIT)
    if n_start < Lk:
        kr, kc = _tma_origin(b, kvh, stride_kb, stride_kh, stride_kn)
        vr, vc = _tma_origin(b, kvh, stride_vb, stride_vh, stride_vn)
        mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        _tma_load(k_desc, [kr + k0 + n_start, kc], kv_bar, k_smem)
        _tma_load(v_desc, [vr + k0 + n_start, vc], kv_bar, v_smem)
        n_last, all_sinks, split_here, m_lo, n_m = _dkdv_queries(n_start, far, j, Lq, Lk, W, S, NSB, CHUNK, BLOCK_M,
                                                                 BLOCK_N, SPLIT)
        for it in range(GROUPS * n_m):
            g = it // n_m
            start_m = m_lo + (it - g * n_m) * BLOCK_M
            h = kvh * GROUPS + g
            qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
            dr, dc = _tma_origin(b, h, stride_ob, stride_oh, stride_om)
            s = it % STAGES
            mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)          # fresh barriers pass phase 1
            mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
            _tma_load(q_desc, [qr + q0 + start_m, qc], ready.index(s), q_bufs.index(s))
            _tma_load(do_desc, [dr + q0 + start_m, dc], ready.index(s), do_bufs.index(s))


@gluon.jit
def _glb_consumer(q_bufs, do_bufs, k_smem, v_smem, kv_bar, ready, empty, LSE, DELTA, DK, DV, DKP, DVP, cu_q, cu_k, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb,
                  stride_vh, stride_vn, stride_lb, stride_lh, stride_lm,
                  Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, qk_scale, NKB, NSB, CHUNK,
                  WG: gl.constexpr, D: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  STAGES: gl.constexpr, VARLEN: gl.constexpr, SPLIT: gl.constexpr):
    HALF: gl.constexpr = 64
    t_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_M, 16])      # S^T, dP^T: keys x queries
    a_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=a_layout, k_width=2)
    key_t: gl.constexpr = gl.SliceLayout(1, t_layout)
    qry_t: gl.constexpr = gl.SliceLayout(0, t_layout)
    one_l: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    pid_bh, b, kvh, q0, Lq, k0, Lk, far, j, n_start = _glb_program(cu_q, cu_k, Lq_fixed, Lk_fixed, HKV, NKB, NSB,
                                                                   BLOCK_N, VARLEN, SPLIT)
    if n_start < Lk:
        off = Lk - Lq
        n_last, all_sinks, split_here, m_lo, n_m = _dkdv_queries(n_start, far, j, Lq, Lk, W, S, NSB, CHUNK, BLOCK_M,
                                                                 BLOCK_N, SPLIT)
        key0 = n_start + WG * HALF
        offs_n = key0 + gl.arange(0, HALF, key_t)
        last_w = gl.minimum(key0 + HALF, Lk) - 1                   # this warpgroup's own keys decide its masks
        sinks_w = key0 + HALF <= S
        k_w = k_smem.slice(WG * HALF, HALF)
        v_w = v_smem.slice(WG * HALF, HALF)
        zero_t = gl.zeros([HALF, BLOCK_M], gl.float32, t_layout)
        dk = gl.zeros([HALF, D], gl.float32, a_layout)
        dv = gl.zeros([HALF, D], gl.float32, a_layout)
        mbarrier.wait(kv_bar, 0)
        for it in range(GROUPS * n_m):
            g = it // n_m
            start_m = m_lo + (it - g * n_m) * BLOCK_M
            h = kvh * GROUPS + g
            rows = start_m + gl.arange(0, BLOCK_M, qry_t)
            row_ok = rows < Lq
            # loaded before the products are issued, used after: the load's latency hides behind them
            lse_1, delta_1 = _glb_row_stats(LSE, DELTA, start_m, b, h, q0, Lq, stride_lb, stride_lh, stride_lm, BLOCK_M,
                                            one_l)
            s = it % STAGES
            mbarrier.wait(ready.index(s), (it // STAGES) & 1)
            q_b = q_bufs.index(s)
            do_b = do_bufs.index(s)
            sT = warpgroup_mma(k_w, q_b.permute((1, 0)), zero_t, use_acc=False, is_async=True)
            dpT = warpgroup_mma(v_w, do_b.permute((1, 0)), zero_t, use_acc=False, is_async=True)
            # spread to the score tiles' column layout (through shared memory) while the products run
            lse = gl.convert_layout(lse_1, qry_t)
            delta = gl.convert_layout(delta_1, qry_t)
            sT = warpgroup_mma_wait(1, deps=(sT,))                      # groups complete in order: dP^T in flight
            pT = gl.exp2(sT * qk_scale - lse[None, :])
            # every pair visible: the first query sees this warpgroup's last key, the last its first (or all sinks)
            inner = (start_m + off >= last_w) & ((start_m + BLOCK_M - 1 + off - key0 < W) | sinks_w)
            if (inner == 0) | (start_m + BLOCK_M > Lq):
                vis = _rule_mask((rows + off)[None, :], offs_n[:, None], Lk, W, S) & row_ok[None, :]
                pT = gl.where(vis, pT, 0.0)
            dv = warpgroup_mma(gl.convert_layout(pT.to(q_b.dtype), op_layout), do_b, dv, is_async=True)
            dpT = warpgroup_mma_wait(1, deps=(dpT,))
            dsT = pT * (dpT - delta[None, :])
            dk = warpgroup_mma(gl.convert_layout(dsT.to(q_b.dtype), op_layout), q_b, dk, is_async=True)
            dk, dv = warpgroup_mma_wait(0, deps=(dk, dv))
            mbarrier.arrive(empty.index(s), count=1)
        dk = dk * (qk_scale * 0.6931471805599453)                     # back to natural-log scale
        rows_k = key0 + gl.arange(0, HALF, gl.SliceLayout(1, a_layout))
        cols = gl.arange(0, D, gl.SliceLayout(0, a_layout))
        # a sink block's partial goes to slot 0 (window rows) or 1 + chunk
        _dkdv_store(dk, dv, rows_k, cols, split_here, gl.where(far, 1 + j // NSB, 0), pid_bh, DKP, DVP, DK, DV, b,
                    kvh, k0, Lk, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, NSB, D, BLOCK_N, D)


@gluon.jit
def _bwd_dkdv_gluon_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DK, DV, cu_q, cu_k,
                           stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                           stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                           stride_lb, stride_lh, stride_lm,
                           Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, qk_scale, DKP, DVP, NKB, NSB, CHUNK,
                           D: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                           VARLEN: gl.constexpr, SPLIT: gl.constexpr):
    """``_bwd_dkdv_kernel``'s grid and arguments (with TMA descriptors), BLOCK_N = 128 keys per CTA."""
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [BLOCK_N, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [BLOCK_N, D], v_desc.layout)
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [STAGES, BLOCK_M, D], q_desc.layout)
    do_bufs = gl.allocate_shared_memory(do_desc.dtype, [STAGES, BLOCK_M, D], do_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)                       # both consumers release a buffer
    gl.warp_specialize([
        (_glb_consumer, (q_bufs, do_bufs, k_smem, v_smem, kv_bar, ready, empty, LSE, DELTA, DK, DV,
                         DKP, DVP, cu_q, cu_k, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                         stride_vb, stride_vh, stride_vn, stride_lb, stride_lh, stride_lm, Lq_fixed, Lk_fixed, HKV,
                         GROUPS, W, S, qk_scale, NKB, NSB, CHUNK, 0, D, BLOCK_M, BLOCK_N, STAGES, VARLEN, SPLIT)),
        (_glb_consumer, (q_bufs, do_bufs, k_smem, v_smem, kv_bar, ready, empty, LSE, DELTA, DK, DV,
                          DKP, DVP, cu_q, cu_k, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                          stride_vb, stride_vh, stride_vn, stride_lb, stride_lh, stride_lm, Lq_fixed, Lk_fixed, HKV,
                          GROUPS, W, S, qk_scale, NKB, NSB, CHUNK, 1, D, BLOCK_M, BLOCK_N, STAGES, VARLEN, SPLIT)),
        (_glb_loader, (q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_smem, v_smem, kv_bar, ready, empty, cu_q,
                       cu_k, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                       stride_vn, stride_ob, stride_oh, stride_om, Lq_fixed, Lk_fixed, HKV, GROUPS, W, S, NKB, NSB,
                       CHUNK, BLOCK_M, BLOCK_N, STAGES, VARLEN, SPLIT)),
    ], [4, 1], [240, 24])
