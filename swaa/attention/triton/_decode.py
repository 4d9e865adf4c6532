"""Decode kernel: a few queries against a long KV cache, split over the keys (flash-decoding).

The keys a decode query can see (sinks, then the window; or everything under full attention) form at most two spans,
``[0, sink_end)`` and ``[lo_w, Lk)``. One program per (split, sequence, KV head) handles all query rows of the GQA
group at once (rows = group heads x queries), so each K/V byte is read once.

- ``ONE_PASS``: one program per (sequence, KV head) walks both spans and writes the normalised output and LSE
  directly: one launch. The wrapper takes it when the visible keys are few (a window) or the grid is already wide.
- otherwise the spans are cut into chunks of ``chunk`` keys (split ``s < n_sink_chunks`` takes a piece of the sink
  span, the rest of the window span); each split writes an fp32 partial output and base-2 LSE, and
  ``_decode_merge_kernel`` combines them (LSE-weighted sum).

Layout: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D) with any strides; partials (splits, B, Hq, Lq, D) fp32. With
``DEV_LK`` the keys are a static buffer whose first ``*LK_PTR`` slots are valid (full attention only): the grid
covers the buffer and each program clips its chunk to the length it reads on the device.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._fwd import _dot, _rule_mask


@triton.jit
def _decode_span(q, k_base, v_base, start, end, m_i, l_i, acc, pos, Lk, W, S, qk_scale, stride_kn, stride_vn,
                 d_ok, BLOCK_N: tl.constexpr, DOT: tl.constexpr):
    """Online softmax of the query rows over keys [start, end), carried in (m_i, l_i, acc)."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        ok = cols < end
        k = tl.load(k_base + cols[None, :] * stride_kn, mask=ok[None, :] & d_ok[:, None], other=0.0)
        qk = _dot(q, k, None, DOT) * qk_scale
        qk = tl.where(_rule_mask(pos[:, None], cols[None, :], Lk, W, S) & ok[None, :], qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_ij == float("-inf"), 0.0, m_ij)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(v_base + cols[:, None] * stride_vn, mask=ok[:, None] & d_ok[None, :], other=0.0)
        acc = _dot(p.to(v.dtype), v, acc, DOT)
        m_i = m_ij
    return m_i, l_i, acc


# the cache length and the spans change every step: not specialised, so one compiled kernel serves every step
# (the strides stay specialised: their divisibility gives the vectorised loads)
@triton.jit(do_not_specialize=["Lk", "sink_end", "lo_w", "chunk", "n_sink_chunks"])
def _decode_kernel(Q, K, V, PO, PL,
                   stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn,
                   stride_ps, stride_pb, stride_ph, stride_pm, stride_ls, stride_lb, stride_lh,
                   Lq, Lk, HKV, GROUPS, W, S, qk_scale, sink_end, lo_w, chunk, n_sink_chunks, LK_PTR,
                   D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
                   DOT: tl.constexpr, DEV_LK: tl.constexpr, ONE_PASS: tl.constexpr):
    # ONE_PASS: PO/PL are the output (B, Hq, Lq, D) in q's dtype and the base-2 LSE (B, Hq, Lq); stride_ps unused
    pid_s = tl.program_id(0)
    if DEV_LK:      # the valid length is on the device (a static cache under a CUDA graph): chunks past it are empty
        Lk = tl.load(LK_PTR).to(tl.int32)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    kvh = pid_bh % HKV
    offs_r = tl.arange(0, BLOCK_R)
    g = offs_r // Lq
    t = offs_r % Lq
    row_ok = offs_r < GROUPS * Lq
    h = kvh * GROUPS + g
    pos = t + (Lk - Lq)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = tl.load(Q + b * stride_qb + h[:, None] * stride_qh + t[:, None] * stride_qm + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b * stride_kb + kvh * stride_kh + offs_d[:, None]
    v_base = V + b * stride_vb + kvh * stride_vh + offs_d[None, :]
    m_i = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    if ONE_PASS:
        m_i, l_i, acc = _decode_span(q, k_base, v_base, 0, sink_end, m_i, l_i, acc, pos, Lk, W, S, qk_scale,
                                     stride_kn, stride_vn, d_ok, BLOCK_N, DOT)
        m_i, l_i, acc = _decode_span(q, k_base, v_base, lo_w, Lk, m_i, l_i, acc, pos, Lk, W, S, qk_scale,
                                     stride_kn, stride_vn, d_ok, BLOCK_N, DOT)
    else:           # chunk pid_s of the sink span [0, sink_end), then of the window span [lo_w, Lk)
        if pid_s < n_sink_chunks:
            start = pid_s * chunk
            end = tl.minimum(sink_end, start + chunk)
        else:
            start = lo_w + (pid_s - n_sink_chunks) * chunk
            end = tl.minimum(Lk, start + chunk)
        m_i, l_i, acc = _decode_span(q, k_base, v_base, start, end, m_i, l_i, acc, pos, Lk, W, S, qk_scale,
                                     stride_kn, stride_vn, d_ok, BLOCK_N, DOT)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse2 = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
    o_ptr = PO + pid_s * stride_ps + b * stride_pb + h[:, None] * stride_ph + t[:, None] * stride_pm + offs_d[None, :]
    tl.store(o_ptr, out.to(PO.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(PL + pid_s * stride_ls + b * stride_lb + h * stride_lh + t, lse2, mask=row_ok)


@triton.jit
def _decode_merge_kernel(PO, PL, OUT, LSE, n_splits, rows, stride_ob, stride_oh, stride_om, H, Lq,
                         D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    # one program per (sequence, head, query): LSE-weighted sum of the split partials
    r = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < n_splits
    lse = tl.load(PL + offs_s * rows + r, mask=s_ok, other=float("-inf"))            # partials are contiguous
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    wts = tl.where(s_ok, tl.math.exp2(lse - m_safe), 0.0)
    tot = tl.sum(wts, 0)
    po = tl.load(PO + (offs_s * rows + r)[:, None] * D + offs_d[None, :],
                 mask=s_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    out = tl.sum(wts[:, None] * po, 0) / tl.where(tot == 0.0, 1.0, tot)
    b = r // (H * Lq)
    h = (r // Lq) % H
    t = r % Lq
    tl.store(OUT + b * stride_ob + h * stride_oh + t * stride_om + offs_d, out.to(OUT.dtype.element_ty),
             mask=offs_d < D)
    tl.store(LSE + r, tl.where(tot == 0.0, float("-inf"), m_safe + tl.math.log2(tl.where(tot == 0.0, 1.0, tot))))
