"""Hopper forward kernel in Gluon: the same rule and key runs as ``_fwd_kernel``, with warp specialisation written out.

Persistent: one CTA per SM walks the tiles (128 queries of one (sequence, query head), in the order of
``_fwd_kernel``'s grid) c, c + G, c + 2G, ... with four partitions:

    consumer 0  (4 warps, 240 registers)   queries [m0, m0 + 64) of each tile
    consumer 1  (4 warps, 240 registers)   queries [m0 + 64, m0 + 128)
    K loader    (1 warp, 24 registers)     TMA of both Q tiles, then the key tiles into a ring of K_STAGES buffers
    V loader    (1 warp, 24 registers)     TMA of value tiles into a ring of V_STAGES buffers

The rings run on across tiles, so the loaders fetch the next tile's Q, K and V while the consumers finish the
current one (one CTA per SM leaves no second program to hide a tile's start and end behind; docs/kernels.md has the
figures).

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

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from ._fwd import _block_start, _key_runs, _query_tile, _seq_bounds, _softmax_probs, _tma_origin

# Triton 3.6 names the TMA load async_copy_global_to_shared; later releases renamed it async_load
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
WG_ROWS = 64          # query rows per consumer warpgroup
CTA_ROWS = 2 * WG_ROWS


@gluon.jit
def _gl_tile(t, n_mg, cu_q, cu_k, Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N: gl.constexpr, VARLEN: gl.constexpr):
    """Tile ``t``'s coordinates and the CTA-level key runs every partition derives alike: (valid, b, h, kvh, q0, Lq,
    k0, Lk, m0, n_sink, ws, n_iter). Tiles past their sequence's queries are not valid (varlen)."""
    pid_m, b, h, kvh = _query_tile(t % n_mg, t // n_mg, H, GROUPS)
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    m0 = pid_m * 128
    # the union of both warpgroups' runs: sinks below the window, then the window
    p_max, sink_hi, ws, int_lo, int_hi, hi, sink_full = _key_runs(m0, Lq, Lk, W, S, 128, BLOCK_N)
    n_sink = (sink_hi + BLOCK_N - 1) // BLOCK_N
    n_iter = gl.where(p_max >= 0, n_sink + gl.maximum((hi - ws + BLOCK_N - 1) // BLOCK_N, 0), 0)
    return m0 < Lq, b, h, kvh, q0, Lq, k0, Lk, m0, n_sink, ws, n_iter


@gluon.jit
def _gl_q_loader(q_desc, q_bufs, q_ready, q_empty, cu_q, cu_k, n_tiles, n_mg, stride_qb, stride_qh, stride_qm,
                 Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N: gl.constexpr, VARLEN: gl.constexpr,
                 do_desc, do_bufs, stride_ob, stride_oh, stride_om, WITH_DO: gl.constexpr):
    """Each tile's two 64-row Q tiles, one buffer per consumer (freed after its last Q K^T). Its own warp, so that
    the K loader never waits for a consumer to finish a tile (docs/kernels.md, "Forward"). WITH_DO (the Gluon dQ kernel): the same rows of dO too, into ``do_bufs`` on the same
    barriers."""
    tt = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        valid, b, h, kvh, q0, Lq, k0, Lk, m0, n_sink, ws, n_iter = _gl_tile(t, n_mg, cu_q, cu_k, Lq_fixed, Lk_fixed,
                                                                            H, GROUPS, W, S, BLOCK_N, VARLEN)
        if valid:
            qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
            for wg in gl.static_range(2):
                mbarrier.wait(q_empty.index(wg), (tt & 1) ^ 1)              # fresh barriers pass phase 1
                if WITH_DO:
                    dr, dc = _tma_origin(b, h, stride_ob, stride_oh, stride_om)
                    mbarrier.expect(q_ready.index(wg), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
                    _tma_load(do_desc, [dr + q0 + m0 + wg * 64, dc], q_ready.index(wg), do_bufs.index(wg))
                else:
                    mbarrier.expect(q_ready.index(wg), q_desc.block_type.nbytes)
                _tma_load(q_desc, [qr + q0 + m0 + wg * 64, qc], q_ready.index(wg),
                                                q_bufs.index(wg))
            tt += 1


@gluon.jit
def _gl_loader(desc, bufs, ready, empty, cu_q, cu_k, n_tiles, n_mg, stride_b, stride_h, stride_n, Lq_fixed,
               Lk_fixed, H, GROUPS, W, S, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, VARLEN: gl.constexpr):
    """Fill the ring ``bufs`` with each tile's key (or value) tiles in visiting order (sinks, then the window)."""
    kv_it = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        valid, b, h, kvh, q0, Lq, k0, Lk, m0, n_sink, ws, n_iter = _gl_tile(t, n_mg, cu_q, cu_k, Lq_fixed, Lk_fixed,
                                                                            H, GROUPS, W, S, BLOCK_N, VARLEN)
        if valid:
            row, col = _tma_origin(b, kvh, stride_b, stride_h, stride_n)
            for it in range(n_iter):
                s = kv_it % STAGES
                mbarrier.wait(empty.index(s), ((kv_it // STAGES) & 1) ^ 1)      # fresh barriers pass phase 1
                start_n = _block_start(it, n_sink, ws, BLOCK_N)
                mbarrier.expect(ready.index(s), desc.block_type.nbytes)
                _tma_load(desc, [row + k0 + start_n, col], ready.index(s), bufs.index(s))
                kv_it += 1


@gluon.jit
def _gl_consumer(k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, q_ready, q_empty, O, LSE, cu_q, cu_k,
                 n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                 stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                 WG: gl.constexpr, D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr,
                 V_STAGES: gl.constexpr, VARLEN: gl.constexpr):
    BM: gl.constexpr = 64
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)
    q_smem = q_bufs.index(WG)
    offs_n = gl.arange(0, BLOCK_N, col_s)
    zero = gl.zeros([BM, BLOCK_N], gl.float32, s_layout)
    kv_it = 0
    tt = 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        valid, b, h, kvh, q0, Lq, k0, Lk, m0, n_sink, ws, n_iter = _gl_tile(t, n_mg, cu_q, cu_k, Lq_fixed, Lk_fixed,
                                                                            H, GROUPS, W, S, BLOCK_N, VARLEN)
        if valid:
            m_start = m0 + WG * BM
            pos = m_start + gl.arange(0, BM, row_s) + (Lk - Lq)
            # this warpgroup's own bounds decide which of the tile's key tiles it masks
            p_max, sink_hi, ws_own, int_lo, int_hi, hi, sink_full = _key_runs(m_start, Lq, Lk, W, S, BM, BLOCK_N)
            m_i = gl.full([BM], float("-inf"), gl.float32, row_s)
            l_i = gl.zeros([BM], gl.float32, row_s)
            acc = gl.zeros([BM, D], gl.float32, o_layout)
            mbarrier.wait(q_ready.index(WG), tt & 1)
            if n_iter > 0:
                # key tile 0: scores and softmax only
                ks = kv_it % K_STAGES
                mbarrier.wait(k_ready.index(ks), (kv_it // K_STAGES) & 1)
                qk = warpgroup_mma(q_smem, k_bufs.index(ks).permute((1, 0)), zero, use_acc=False, is_async=True)
                qk = warpgroup_mma_wait(0, deps=(qk,))
                mbarrier.arrive(k_empty.index(ks), count=1)
                start_n = _block_start(0, n_sink, ws, BLOCK_N)
                p, alpha, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, start_n + offs_n, pos, sink_full, int_lo,
                                                    int_hi, Lk, W, S, qk_scale)
                for it in range(1, n_iter):
                    j = kv_it + it
                    ks = j % K_STAGES
                    # then P_{j-1} V_{j-1} onto the accumulator rescaled by alpha_{j-1}, in flight during this softmax
                    vs = (j - 1) % V_STAGES
                    mbarrier.wait(k_ready.index(ks), (j // K_STAGES) & 1)
                    qk = warpgroup_mma(q_smem, k_bufs.index(ks).permute((1, 0)), zero, use_acc=False, is_async=True)
                    mbarrier.wait(v_ready.index(vs), ((j - 1) // V_STAGES) & 1)
                    acc = acc * gl.convert_layout(alpha, row_o)[:, None]           # while Q K_j^T computes
                    p_op = gl.convert_layout(p.to(q_smem.dtype), p_layout)
                    acc = warpgroup_mma(p_op, v_bufs.index(vs), acc, is_async=True)
                    qk = warpgroup_mma_wait(1, deps=(qk,))                   # groups complete in order
                    mbarrier.arrive(k_empty.index(ks), count=1)
                    start_n = _block_start(it, n_sink, ws, BLOCK_N)
                    p, alpha, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, start_n + offs_n, pos, sink_full,
                                                        int_lo, int_hi, Lk, W, S, qk_scale)
                    acc = warpgroup_mma_wait(0, deps=(acc,))
                    mbarrier.arrive(v_empty.index(vs), count=1)
                mbarrier.arrive(q_empty.index(WG), count=1)                  # the loader may fetch the next Q
                j = kv_it + n_iter - 1
                vs = j % V_STAGES
                mbarrier.wait(v_ready.index(vs), (j // V_STAGES) & 1)
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
                p_op = gl.convert_layout(p.to(q_smem.dtype), p_layout)
                acc = warpgroup_mma(p_op, v_bufs.index(vs), acc, is_async=True)
                acc = warpgroup_mma_wait(0, deps=(acc,))
                mbarrier.arrive(v_empty.index(vs), count=1)
            else:
                mbarrier.arrive(q_empty.index(WG), count=1)
            kv_it += n_iter
            tt += 1

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
def _gl_rings(k_desc, v_desc, q_desc, D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr,
              V_STAGES: gl.constexpr):
    """The shared memory of a persistent Gluon kernel's loaders (this forward's, the dQ kernel's): K and V rings of
    BLOCK_N-row tiles, one 64-row Q buffer per consumer, and their barriers initialised (a K/V buffer is released
    when both consumers have arrived)."""
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [K_STAGES, BLOCK_N, D], k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [V_STAGES, BLOCK_N, D], v_desc.layout)
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [2, 64, D], q_desc.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    return k_bufs, v_bufs, q_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty


@gluon.jit
def _fwd_gluon_kernel(q_desc, k_desc, v_desc, O, LSE, cu_q, cu_k,
                      stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                      stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                      stride_lb, stride_lh, stride_lm,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale, n_tiles, n_mg,
                      D: gl.constexpr, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
                      VARLEN: gl.constexpr):
    """Grid: (CTAs,) with ``n_tiles`` = query tiles x sequences x KV heads, ``n_mg`` = query tiles x GROUPS."""
    k_bufs, v_bufs, q_bufs, k_ready, k_empty, v_ready, v_empty, q_ready, q_empty = _gl_rings(
        k_desc, v_desc, q_desc, D, BLOCK_N, K_STAGES, V_STAGES)

    gl.warp_specialize([
        (_gl_consumer, (k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, q_ready, q_empty, O, LSE,
                        cu_q, cu_k, n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                        stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                        0, D, BLOCK_N, K_STAGES, V_STAGES, VARLEN)),
        (_gl_consumer, (k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bufs, q_ready, q_empty, O, LSE,
                        cu_q, cu_k, n_tiles, n_mg, Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                        stride_ob, stride_oh, stride_om, stride_lb, stride_lh, stride_lm,
                        1, D, BLOCK_N, K_STAGES, V_STAGES, VARLEN)),
        (_gl_loader, (k_desc, k_bufs, k_ready, k_empty, cu_q, cu_k, n_tiles, n_mg, stride_kb, stride_kh, stride_kn,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, K_STAGES, VARLEN)),
        (_gl_loader, (v_desc, v_bufs, v_ready, v_empty, cu_q, cu_k, n_tiles, n_mg, stride_vb, stride_vh, stride_vn,
                      Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, V_STAGES, VARLEN)),
        (_gl_q_loader, (q_desc, q_bufs, q_ready, q_empty, cu_q, cu_k, n_tiles, n_mg, stride_qb, stride_qh,
                        stride_qm, Lq_fixed, Lk_fixed, H, GROUPS, W, S, BLOCK_N, VARLEN, q_desc, q_bufs, 0, 0, 0,
                        False)),
    ], [4, 1, 1, 1], [240, 24, 24, 24])
