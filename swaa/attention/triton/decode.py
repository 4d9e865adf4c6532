"""Split-KV decode: a few queries (B, Hq, Lq <= 16, D) against a long KV cache (B, Hkv, Lk, D).

The visible keys are at most two spans, the sinks ``[0, sink_end)`` and the window ``[lo_w, Lk)`` (everything under
full attention), so a step reads S + W keys whatever the cache length. One launch when one program per (sequence,
KV head) covers them (a window's few keys: one launch costs the host about half of two; or a grid that already
fills the card), else the split kernel over chunks of the spans and the merge kernel.
"""
from __future__ import annotations

import math

import torch

from . import tuning
from .layout import INTERPRET, LOG2E, dot_mode, sm_count, softmax_scale, strides_dense, window_args

try:
    import triton

    from ._decode import _decode_kernel, _decode_merge_kernel
except ImportError:  # pragma: no cover - no triton wheel
    triton = None


def decode_spans(lq, lk, window, keep_first):
    """The key spans a decode step reads: (sink_end, window_start). Keys [0, sink_end) and [window_start, lk)."""
    if window is None:
        return 0, 0
    lo_w = max(0, lk - lq - window + 1)
    return min(keep_first, lo_w), lo_w


def decode_ranges(lq, lk, window, keep_first, chunk):
    """The (start, end) key chunks the split kernel's programs take (the kernel derives the same from the spans)."""
    sink_end, lo_w = decode_spans(lq, lk, window, keep_first)
    out = [(c, min(sink_end, c + chunk)) for c in range(0, sink_end, chunk)]
    out += [(c, min(lk, c + chunk)) for c in range(lo_w, lk, chunk)]
    return out or [(0, 0)]


def triton_decode(q, k, v, *, window=None, keep_first=0, scale=None, return_lse=False, chunk=None,
                  base2_lse=False, kv_len: torch.Tensor | None = None, one_pass: bool | None = None):
    """Decode attention under the rule: q (B, Hq, Lq<=16, D) against k/v (B, Hkv, Lk, D), last dimension
    contiguous. Returns out [, lse] (``base2_lse``: the base-2 LSE, as the other kernels keep it).

    ``chunk``: keys per split program (default: about three programs per SM). ``one_pass``: one program per
    (sequence, KV head) and one launch (default: at most the tuning table's visible keys, or a grid that already
    fills the card). ``kv_len``: a one-element integer tensor on q's device holding how many
    leading key slots are valid (full attention over a static buffer that a CUDA graph replays: no host sync, the
    launch depends only on the buffer's size); the queries are the last ``Lq`` of those."""
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    if kv_len is not None:
        if window is not None or keep_first:
            raise ValueError(f"triton_decode(kv_len=...) is full attention over a static buffer; got window={window}, "
                             f"keep_first={keep_first} (a windowed static layer attends to all of its slots instead)")
        if kv_len.numel() != 1 or kv_len.dtype not in (torch.int32, torch.int64) or kv_len.device != q.device:
            raise ValueError(f"kv_len must be a one-element int32/int64 tensor on {q.device}; got "
                             f"{tuple(kv_len.shape)} {kv_len.dtype} on {kv_len.device}")
    groups = hq // hkv
    qk_scale = softmax_scale(q, scale) * LOG2E
    w, s = window_args(window, keep_first)
    bn, warps, stages, split_factor = tuning.decode_params()
    bn1, warps1, stages1, one_pass_keys = tuning.decode_one_pass_params()
    sink_end, lo_w = decode_spans(lq, lk, window, keep_first)
    n_vis = sink_end + (lk - lo_w)
    sms = 1 if INTERPRET else sm_count(q.device)
    if one_pass is None:
        one_pass = chunk is None and kv_len is None and (n_vis <= one_pass_keys or b * hkv >= split_factor * sms)
    block_r = max(16, triton.next_power_of_2(groups * lq))
    block_d = max(16, triton.next_power_of_2(d))
    sq, sk, sv = strides_dense(q), strides_dense(k), strides_dense(v)
    common = dict(D=d, BLOCK_D=block_d, BLOCK_R=block_r, DOT=dot_mode(q.dtype))
    lse2 = torch.empty(b, hq, lq, device=q.device, dtype=torch.float32)
    if one_pass:            # the output and LSE written by the split kernel itself (one split: no merge)
        out = torch.empty((b, hq, lq, d), device=q.device, dtype=q.dtype)
        _decode_kernel[(1, b * hkv)](
            q, k, v, out, lse2, *sq, *sk, *sv, 0, hq * lq * d, lq * d, d, 0, hq * lq, lq,
            lq, lk, hkv, groups, w, s, qk_scale, sink_end, lo_w, 0, 0, q, DEV_LK=False, ONE_PASS=True, BLOCK_N=bn1,
            num_warps=warps1, num_stages=stages1, **common)
    else:
        if chunk is None:
            splits = max(1, triton.cdiv(split_factor * sms, b * hkv))
            chunk = max(bn, triton.cdiv(triton.cdiv(n_vis, splits), bn) * bn)      # whole key blocks
        n_sink_chunks = triton.cdiv(sink_end, chunk)
        ns = max(1, n_sink_chunks + triton.cdiv(lk - lo_w, chunk))
        po = torch.empty(ns, b, hq, lq, d, device=q.device, dtype=torch.float32)
        pl = torch.empty(ns, b, hq, lq, device=q.device, dtype=torch.float32)
        _decode_kernel[(ns, b * hkv)](
            q, k, v, po, pl, *sq, *sk, *sv, *po.stride()[:4], *pl.stride()[:3], lq, lk, hkv, groups, w, s, qk_scale,
            sink_end, lo_w, chunk, n_sink_chunks, kv_len if kv_len is not None else q, DEV_LK=kv_len is not None,
            ONE_PASS=False, BLOCK_N=bn, num_warps=warps, num_stages=stages, **common)
        out = torch.empty_like(q)
        _decode_merge_kernel[(b * hq * lq,)](po, pl, out, lse2, ns, b * hq * lq, *strides_dense(out), hq, lq, D=d,
                                             BLOCK_D=block_d, BLOCK_S=max(16, triton.next_power_of_2(ns)))
    if base2_lse:
        return out, lse2
    return (out, lse2 * math.log(2.0)) if return_lse else out
