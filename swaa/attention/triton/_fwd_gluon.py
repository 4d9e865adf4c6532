"""Hopper forward kernel in Gluon: the same rule and key runs as ``_fwd_kernel``, with warp specialisation written out.

One CTA takes 128 queries of one (sequence, query head) and runs four partitions:

    consumer 0  (4 warps, 240 registers)   queries [m0, m0 + 64)
    consumer 1  (4 warps, 240 registers)   queries [m0 + 64, m0 + 128)
    K loader    (1 warp, 24 registers)     TMA of key tiles into a ring of K_STAGES buffers
    V loader    (1 warp, 24 registers)     TMA of value tiles into a ring of V_STAGES buffers

Both consumers walk the same key tiles (the CTA's sink tiles, then its window [ws, hi)) and share each K/V buffer:
a buffer is released when both have arrived on its "empty" barrier (count 2). Each consumer applies the rule for its
own 64 rows, so a tile is masked for a consumer only where its own rows need it (``_needs_mask`` on its bounds).
A consumer defers P V by one tile like ``_fwd_loop_deferred``: tile j issues Q K_j^T, then P_{j-1} V_{j-1}, waits for
the scores only, releases K_j, runs the softmax of tile j while the tensor cores finish P_{j-1} V_{j-1}, then waits
for that and releases V_{j-1}. P stays in registers as the second product's A operand. The triton-language kernel
cannot be given this layout: its registers are capped by occupancy (two 4-warp programs per SM), which keeps its
key tiles at 64; here the loaders need 24 registers and the consumers get 240, enough for 64 x 128 score tiles.

Outputs match ``_fwd_kernel``'s: O in the input dtype, the LSE in base 2 over scaled scores. Inputs come through
2D TMA descriptors over the storage seen as rows (``_tma_desc`` builds them; the wrapper falls back to
``_fwd_kernel`` when it cannot).
"""
from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from ._fwd import _block_start, _key_runs, _needs_mask, _query_program, _seq_bounds, _softmax_probs, _tma_origin

WG_ROWS = 64          # query rows per consumer warpgroup
CTA_ROWS = 2 * WG_ROWS


@gluon.jit
def _gl_loader(desc, bufs, ready, empty, row, col, n_sink, ws, n_iter, BLOCK_N: gl.constexpr,
               STAGES: gl.constexpr):
    """Fill the ring ``bufs`` with the CTA's key tiles in visiting order (sinks, then the window)."""
    for it in range(n_iter):
        s = it % STAGES
        mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)        # fresh barriers pass phase 1
        start_n = _block_start(it, n_sink, ws, BLOCK_N)
        mbarrier.expect(ready.index(s), desc.block_type.nbytes)
        tma.async_copy_global_to_shared(desc, [row + start_n, col], ready.index(s), bufs.index(s))


@gluon.jit
def _gl_consumer(q_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_smem, q_bar, O, LSE,
                 b, h, q0, Lq, Lk, m0, qr, qc, n_sink, ws, n_iter, W, S, qk_scale,
                 stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                 WG: gl.constexpr, D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr,
                 V_STAGES: gl.constexpr):
    BM: gl.constexpr = 64
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)

    m_start = m0 + WG * BM
    off = Lk - Lq
    pos = m_start + gl.arange(0, BM, row_s) + off
    offs_n = gl.arange(0, BLOCK_N, col_s)
    # this warpgroup's own bounds decide which of the CTA's tiles it masks
    p_max, sink_hi, ws_own, int_lo, int_hi, hi, sink_full = _key_runs(m_start, Lq, Lk, W, S, BM, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [qr + q0 + m_start, qc], q_bar, q_smem)
    mbarrier.wait(q_bar, 0)

    m_i = gl.full([BM], float("-inf"), gl.float32, row_s)
    l_i = gl.zeros([BM], gl.float32, row_s)
    acc = gl.zeros([BM, D], gl.float32, o_layout)
    zero = gl.zeros([BM, BLOCK_N], gl.float32, s_layout)
    if n_iter > 0:
        # tile 0: scores and softmax only
        mbarrier.wait(k_ready.index(0), 0)
        qk = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), zero, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(0, deps=(qk,))
        mbarrier.arrive(k_empty.index(0), count=1)
        start_n = _block_start(0, n_sink, ws, BLOCK_N)
        p, alpha, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, start_n + offs_n, pos, sink_full, int_lo,
                                            int_hi, Lk, W, S, qk_scale)
        for it in range(1, n_iter):
            ks = it % K_STAGES
            mbarrier.wait(k_ready.index(ks), (it // K_STAGES) & 1)
            qk = warpgroup_mma(q_smem, k_bufs.index(ks).permute((1, 0)), zero, use_acc=False, is_async=True)
            # P_{j-1} V_{j-1} onto the accumulator rescaled by alpha_{j-1}, in flight during this tile's softmax
            vs = (it - 1) % V_STAGES
            mbarrier.wait(v_ready.index(vs), ((it - 1) // V_STAGES) & 1)
            acc = acc * gl.convert_layout(alpha, row_o)[:, None]
            p_op = gl.convert_layout(p.to(q_smem.dtype), p_layout)
            acc = warpgroup_mma(p_op, v_bufs.index(vs), acc, is_async=True)
            qk = warpgroup_mma_wait(1, deps=(qk,))                       # groups complete in order
            mbarrier.arrive(k_empty.index(ks), count=1)
            start_n = _block_start(it, n_sink, ws, BLOCK_N)
            p, alpha, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, start_n + offs_n, pos, sink_full, int_lo,
                                                int_hi, Lk, W, S, qk_scale)
            acc = warpgroup_mma_wait(0, deps=(acc,))
            mbarrier.arrive(v_empty.index(vs), count=1)
        vs = (n_iter - 1) % V_STAGES
        mbarrier.wait(v_ready.index(vs), ((n_iter - 1) // V_STAGES) & 1)
        acc = acc * gl.convert_layout(alpha, row_o)[:, None]
        acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), p_layout), v_bufs.index(vs), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(v_empty.index(vs), count=1)

    l_o = gl.convert_layout(l_i, row_o)
    l_safe = gl.where(l_o == 0.0, 1.0, l_o)
    out = acc / l_safe[:, None]
    rows = m_start + gl.arange(0, BM, row_o)
    cols = gl.arange(0, D, col_o)
    row_ok = rows < Lq
    o_ptrs = O + b * stride_ob + h * stride_oh + (q0 + rows)[:, None] * stride_om + cols[None, :]
    gl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & (cols < D)[None, :])
    lse2 = gl.where(l_o == 0.0, float("-inf"), gl.convert_layout(m_i, row_o) + gl.log2(l_safe))
    gl.store(LSE + b * stride_lb + h * stride_lh + (q0 + rows) * stride_lm, lse2, mask=row_ok)


@gluon.jit
def _gl_consumer1(q_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_smem, q_bar, O, LSE,
                  b, h, q0, Lq, Lk, m0, qr, qc, n_sink, ws, n_iter, W, S, qk_scale,
                  stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                  D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr):
    _gl_consumer(q_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_smem, q_bar, O, LSE,
                 b, h, q0, Lq, Lk, m0, qr, qc, n_sink, ws, n_iter, W, S, qk_scale,
                 stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm, 1, D, BLOCK_N, K_STAGES, V_STAGES)


@gluon.jit
def _fwd_gluon_kernel(q_desc, k_desc, v_desc, O, LSE, cu_q, cu_k,
                      stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                      stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                      stride_lb, stride_lh, stride_lm,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                      D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
                      VARLEN: gl.constexpr):
    pid_m, b, h, kvh = _query_program(H, GROUPS)
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    m0 = pid_m * 128
    if m0 < Lq:
        qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
        kr, kc = _tma_origin(b, kvh, stride_kb, stride_kh, stride_kn)
        vr, vc = _tma_origin(b, kvh, stride_vb, stride_vh, stride_vn)
        # the CTA's key runs: the union of both warpgroups' (sinks below the window, then the window)
        p_max, sink_hi, ws, int_lo, int_hi, hi, sink_full = _key_runs(m0, Lq, Lk, W, S, 128, BLOCK_N)
        n_sink = (sink_hi + BLOCK_N - 1) // BLOCK_N
        n_iter = gl.where(p_max >= 0, n_sink + gl.maximum((hi - ws + BLOCK_N - 1) // BLOCK_N, 0), 0)

        k_bufs = gl.allocate_shared_memory(k_desc.dtype, [K_STAGES, BLOCK_N, D], k_desc.layout)
        v_bufs = gl.allocate_shared_memory(v_desc.dtype, [V_STAGES, BLOCK_N, D], v_desc.layout)
        q_smem0 = gl.allocate_shared_memory(q_desc.dtype, [64, D], q_desc.layout)
        q_smem1 = gl.allocate_shared_memory(q_desc.dtype, [64, D], q_desc.layout)
        k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
        q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(K_STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=2)                 # both consumers release a buffer
        for i in gl.static_range(V_STAGES):
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(v_empty.index(i), count=2)
        mbarrier.init(q_bars.index(0), count=1)
        mbarrier.init(q_bars.index(1), count=1)

        gl.warp_specialize([
            (_gl_consumer, (q_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_smem0, q_bars.index(0),
                            O, LSE, b, h, q0, Lq, Lk, m0, qr, qc, n_sink, ws, n_iter, W, S, qk_scale,
                            stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                            0, D, BLOCK_N, K_STAGES, V_STAGES)),
            (_gl_consumer1, (q_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_smem1, q_bars.index(1),
                             O, LSE, b, h, q0, Lq, Lk, m0, qr, qc, n_sink, ws, n_iter, W, S, qk_scale,
                             stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                             D, BLOCK_N, K_STAGES, V_STAGES)),
            (_gl_loader, (k_desc, k_bufs, k_ready, k_empty, kr + k0, kc, n_sink, ws, n_iter, BLOCK_N, K_STAGES)),
            (_gl_loader, (v_desc, v_bufs, v_ready, v_empty, vr + k0, vc, n_sink, ws, n_iter, BLOCK_N, V_STAGES)),
        ], [4, 1, 1], [240, 24, 24])
