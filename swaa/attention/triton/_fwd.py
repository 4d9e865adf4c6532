"""Forward kernel: sink + sliding-window attention, online softmax, GQA, dense or packed (varlen) layout.

One program handles BLOCK_M queries of one (sequence, query head). It visits key blocks in one software-pipelined
loop, never a block twice even where sinks and window overlap:

    sinks  [0, min(S, ws))           rule applied (only keys < S survive there)
    edge   [ws, int_lo)              window start, rule applied
    inner  [int_lo, int_hi)          every pair visible: no mask
    edge   [int_hi, hi)              diagonal, rule applied

``ws`` is the window's first key rounded down to BLOCK_N; key blocks outside the sinks and the window are never
loaded. (Four separate loops would refill the pipeline four times per program and keep two loops' stage buffers
alive at once, which rules out 128-key tiles.) Scores use exp2 with the softmax scale folded
into log2(e); the LSE is kept in base 2 internally. On Hopper, Q/K/V tiles come through TMA descriptors when the
layout allows (see ``_tma_desc``), else through pointer loads with per-row strides; one kernel serves (B, H, L, D)
and packed (total, H, D) with cu_seqlens.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    # DOT 0: native (bf16/fp16 tensor cores, fp32 accumulate); 1: IEEE fp32 (fp32 inputs); 2: upcast to fp32
    # first (the CPU interpreter, whose bf16 dot is wrong in Triton 3.9)
    if DOT == 2:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif DOT == 1:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _rule_mask(pos, cols, Lk, W, S):
    # The SWAA rule on broadcasting query positions and key positions, plus the key bound:
    # (cols < Lk) & (cols <= pos) & ((pos - cols < W) | (cols < S)). Written as one unsigned compare per pair,
    # pos - cols < thr[col]: a negative distance wraps to >= 2^31 (not causal), thr is W for window keys, 2^31 for
    # sinks (any causal distance) and 0 past the keys. (The direct form cost 7.5 instructions per pair in SASS.)
    thr = tl.where(cols < Lk, tl.where(cols < S, -2147483648, W), 0).to(tl.uint32, bitcast=True)
    return (pos - cols).to(tl.uint32, bitcast=True) < thr


@triton.jit
def _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN: tl.constexpr):
    """(first query row, query count, first key row, key count) of sequence ``b``."""
    if VARLEN:
        q0 = tl.load(cu_q + b)
        k0 = tl.load(cu_k + b)
        return q0, tl.load(cu_q + b + 1) - q0, k0, tl.load(cu_k + b + 1) - k0
    else:
        return 0, Lq_fixed, 0, Lk_fixed


@triton.jit
def _query_program(H, GROUPS):
    """(query block, sequence, query head, KV head) of a program in the grid (query blocks x GROUPS, sequences x KV
    heads) that the forward and dQ kernels share: the query heads sharing a KV head run side by side on the same
    query block, so their K/V tiles are read from HBM once and then served by L2."""
    return _query_tile(tl.program_id(0), tl.program_id(1), H, GROUPS)


@triton.jit
def _query_tile(pid_mg, pid_bk, H, GROUPS):
    """``_query_program`` for grid coordinates given as numbers (the persistent Gluon forward walks them)."""
    hkv_n = H // GROUPS
    kvh = pid_bk % hkv_n
    return pid_mg // GROUPS, pid_bk // hkv_n, kvh * GROUPS + pid_mg % GROUPS, kvh


@triton.jit
def _key_runs(m_start, Lq, Lk, W, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key-run bounds of the query block starting at ``m_start``: sinks [0, sink_hi), window [ws, hi) whose
    [int_lo, int_hi) part is visible to every row (no mask), as is [0, sink_full); p_max < 0 means the block sees
    no key."""
    off = Lk - Lq
    p_min = m_start + off
    p_max = tl.minimum(m_start + BLOCK_M, Lq) - 1 + off
    hi = tl.minimum(Lk, p_max + 1)
    ws = (tl.maximum(p_min - W + 1, 0) // BLOCK_N) * BLOCK_N
    sink_hi = tl.minimum(S, ws)
    int_lo = tl.maximum(((tl.maximum(p_max - W + 1, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, ws)
    int_hi = ((p_min + 1) // BLOCK_N) * BLOCK_N
    # sink blocks below sink_full hold only sinks that every row sees (j < S and j <= p_min): no mask either
    sink_full = tl.maximum(tl.minimum(S // BLOCK_N, (p_min + 1) // BLOCK_N), 0) * BLOCK_N
    return p_max, sink_hi, ws, int_lo, int_hi, hi, sink_full


@triton.jit
def _needs_mask(start_n, sink_full, int_lo, int_hi):
    """Whether the key block at ``start_n`` needs the rule: sink blocks with keys past the sinks or not yet causal
    for every row, the window's start, the diagonal."""
    return ((start_n < int_lo) & (start_n >= sink_full)) | (start_n >= int_hi)


@triton.jit
def _tma_origin(b, h, sb, sh, sl):
    """(row, column) of the (sequence, head) slab in a TMA descriptor over the storage as rows of ``sl``."""
    off = b.to(tl.int64) * sb + h.to(tl.int64) * sh
    return (off // sl).to(tl.int32), (off % sl).to(tl.int32)


@triton.jit
def _block_start(it, n_sink, ws, BLOCK_N: tl.constexpr):
    """Key offset of iteration ``it`` of the one loop over the sink blocks then the window blocks."""
    return tl.where(it < n_sink, it * BLOCK_N, ws + (it - n_sink) * BLOCK_N)


@triton.jit
def _load_k(k_src, kr, kc, start_n, cols, stride_kn, d_ok, Lk, TMA: tl.constexpr):
    if TMA:
        return k_src.load([kr + start_n, kc]).T                              # (D, BN)
    else:
        return tl.load(k_src + start_n * stride_kn, mask=(cols < Lk)[None, :] & d_ok[:, None], other=0.0)


@triton.jit
def _load_v(v_src, vr, vc, start_n, cols, stride_vn, d_ok, Lk, TMA: tl.constexpr):
    if TMA:
        return v_src.load([vr + start_n, vc])                                # (BN, D)
    else:
        return tl.load(v_src + start_n * stride_vn, mask=(cols < Lk)[:, None] & d_ok[None, :], other=0.0)


@triton.jit
def _softmax_probs(qk, l_i, m_i, start_n, cols, pos, sink_full, int_lo, int_hi, Lk, W, S, qk_scale):
    """Online-softmax update with one block's scores: the rule applied on sink and edge blocks only; returns the
    probabilities (fp32), the factor alpha that rescales what was accumulated before, and the new sum and max."""
    if _needs_mask(start_n, sink_full, int_lo, int_hi):                      # sink or edge block
        qk = tl.where(_rule_mask(pos[:, None], cols[None, :], Lk, W, S), qk, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    m_safe = tl.where(m_ij == float("-inf"), 0.0, m_ij)                     # rows that saw nothing yet
    p = tl.math.exp2(qk * qk_scale - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    return p, alpha, l_i * alpha + tl.sum(p, 1), m_ij


@triton.jit
def _fwd_loop(acc, l_i, m_i, q, k_src, v_src, kr, kc, vr, vc, stride_kn, stride_vn, n_sink, ws, sink_full, int_lo,
              int_hi, n_iter, pos, offs_n, d_ok, Lk, W, S, qk_scale, BLOCK_N: tl.constexpr, DOT: tl.constexpr,
              TMA: tl.constexpr):
    # One software-pipelined loop over every visited key block (one pipeline fill per program instead of one per
    # run, and one set of stage buffers). Blocks in [int_lo, int_hi) run unmasked; sink and edge blocks apply the
    # rule. k_src/v_src: TMA descriptors (key j at row kr + j / vr + j, columns kc / vc) or pointer tiles at key 0.
    for it in tl.range(0, n_iter):
        start_n = _block_start(it, n_sink, ws, BLOCK_N)
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n                                              # (BLOCK_N,)
        k = _load_k(k_src, kr, kc, start_n, cols, stride_kn, d_ok, Lk, TMA)
        qk = _dot(q, k, None, DOT)
        p, alpha, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, cols, pos, sink_full, int_lo, int_hi, Lk, W, S,
                                            qk_scale)
        acc = acc * alpha[:, None]
        v = _load_v(v_src, vr, vc, start_n, cols, stride_vn, d_ok, Lk, TMA)
        acc = _dot(p.to(v.dtype), v, acc, DOT)
    return acc, l_i, m_i


@triton.jit
def _fwd_loop_deferred(acc, l_i, m_i, q, k_src, v_src, kr, kc, vr, vc, stride_kn, stride_vn, n_sink, ws, sink_full,
                       int_lo, int_hi, n_iter, pos, offs_n, d_ok, Lk, W, S, qk_scale, BLOCK_N: tl.constexpr,
                       DOT: tl.constexpr, TMA: tl.constexpr):
    # The same loop with P V deferred by one block: iteration j issues Q K_j^T, then P_{j-1} V_{j-1} onto the
    # accumulator rescaled by alpha_{j-1}, then runs the softmax of block j, so the tensor cores compute
    # P_{j-1} V_{j-1} while the softmax runs (wgmma groups complete in order: waiting for the scores then leaves the
    # later P V in flight). Iteration 0 adds a zero P.
    p_prev = tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32)
    a_prev = tl.full([q.shape[0]], 1.0, dtype=tl.float32)
    for it in tl.range(0, n_iter):
        start_n = tl.multiple_of(_block_start(it, n_sink, ws, BLOCK_N), BLOCK_N)
        prev_n = tl.multiple_of(_block_start(tl.maximum(it - 1, 0), n_sink, ws, BLOCK_N), BLOCK_N)
        cols = start_n + offs_n
        k = _load_k(k_src, kr, kc, start_n, cols, stride_kn, d_ok, Lk, TMA)
        qk = _dot(q, k, None, DOT)
        v = _load_v(v_src, vr, vc, prev_n, prev_n + offs_n, stride_vn, d_ok, Lk, TMA)
        acc = _dot(p_prev.to(q.dtype), v, acc * a_prev[:, None], DOT)
        p_prev, a_prev, l_i, m_i = _softmax_probs(qk, l_i, m_i, start_n, cols, pos, sink_full, int_lo, int_hi, Lk,
                                                  W, S, qk_scale)
    last_n = tl.multiple_of(_block_start(n_iter - 1, n_sink, ws, BLOCK_N), BLOCK_N)
    v = _load_v(v_src, vr, vc, last_n, last_n + offs_n, stride_vn, d_ok, Lk, TMA)
    return _dot(p_prev.to(q.dtype), v, acc * a_prev[:, None], DOT), l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, cu_q, cu_k,
                stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                stride_lb, stride_lh, stride_lm,
                Lq_fixed, Lk_fixed, H, GROUPS, W, S, qk_scale,
                D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                VARLEN: tl.constexpr, DOT: tl.constexpr, TMA: tl.constexpr = False, DEFER: tl.constexpr = False):
    """Q/K/V are pointers, or with TMA descriptors over their storage as rows of stride_qm/kn/vn elements
    (the wrapper checks the layout allows it; D == BLOCK_D there)."""
    pid_m, b, h, kvh = _query_program(H, GROUPS)
    q0, Lq, k0, Lk = _seq_bounds(cu_q, cu_k, b, Lq_fixed, Lk_fixed, VARLEN)
    m_start = pid_m * BLOCK_M
    if m_start >= Lq:
        return
    off = Lk - Lq                                          # queries align to the end of the keys
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < Lq
    pos = offs_m + off

    if TMA:
        qr, qc = _tma_origin(b, h, stride_qb, stride_qh, stride_qm)
        kr, kc = _tma_origin(b, kvh, stride_kb, stride_kh, stride_kn)
        vr, vc = _tma_origin(b, kvh, stride_vb, stride_vh, stride_vn)
        kr += k0
        vr += k0
        q = Q.load([qr + q0 + m_start, qc])              # rows past the sequence are never stored
        k_src = K
        v_src = V
    else:
        kr, kc, vr, vc = 0, 0, 0, 0
        q_ptrs = Q + b * stride_qb + h * stride_qh + (q0 + offs_m)[:, None] * stride_qm + offs_d[None, :]
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        k_src = K + b * stride_kb + kvh * stride_kh + (k0 + offs_n)[None, :] * stride_kn + offs_d[:, None]
        v_src = V + b * stride_vb + kvh * stride_vh + (k0 + offs_n)[:, None] * stride_vn + offs_d[None, :]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    p_max, sink_hi, ws, int_lo, int_hi, hi, sink_full = _key_runs(m_start, Lq, Lk, W, S, BLOCK_M, BLOCK_N)
    if p_max >= 0:
        # sink blocks [0, sink_hi) before the window's first block, then the window [ws, hi); the interior
        # [int_lo, int_hi) holds keys every row of the block sees (j <= p_min and p_max - j < W)
        n_sink = tl.cdiv(sink_hi, BLOCK_N)
        n_iter = n_sink + tl.cdiv(hi - ws, BLOCK_N)
        if DEFER:
            acc, l_i, m_i = _fwd_loop_deferred(acc, l_i, m_i, q, k_src, v_src, kr, kc, vr, vc, stride_kn, stride_vn,
                                               n_sink, ws, sink_full, int_lo, int_hi, n_iter, pos, offs_n, d_ok, Lk,
                                               W, S, qk_scale, BLOCK_N, DOT, TMA)
        else:
            acc, l_i, m_i = _fwd_loop(acc, l_i, m_i, q, k_src, v_src, kr, kc, vr, vc, stride_kn, stride_vn, n_sink,
                                      ws, sink_full, int_lo, int_hi, n_iter, pos, offs_n, d_ok, Lk, W, S, qk_scale,
                                      BLOCK_N, DOT, TMA)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + (q0 + offs_m)[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    lse2 = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))     # base 2, scaled scores
    tl.store(LSE + b * stride_lb + h * stride_lh + (q0 + offs_m) * stride_lm, lse2, mask=row_ok)
