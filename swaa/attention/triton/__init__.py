"""Our Triton kernels for sink + sliding-window attention: forward, backward, varlen (cu_seqlens) and decode.

Registered as backend "triton". Runs on CUDA, and on CPU under ``TRITON_INTERPRET=1`` (slowly: for tests).
Layouts: dense q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D); packed q (total_q, Hq, D), k/v (total_k, Hkv, D) with
``cu_seqlens``. bf16/fp16 inputs with fp32 accumulation; fp32 inputs use IEEE dots. Any head_dim up to 256.
"""
from __future__ import annotations

import functools
import math
import os
import warnings

import torch

from ..masks import check_window

__all__ = ["triton_available", "triton_unsupported", "triton_attention", "swaa_attention_varlen",
           "triton_decode", "INTERPRET"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_LOG2E = 1.4426950408889634
_BIG_W = 1 << 30
_LAZY_FWD = os.environ.get("SWAA_TRITON_LAZY", "0") == "1"  # rescale the accumulator only when a max grows > 2^8
_DEFER_FWD = {"0": False, "1": True}.get(os.environ.get("SWAA_TRITON_DEFER", ""))  # None: by head_dim (_defer)
_SINK_SPLIT = os.environ.get("SWAA_TRITON_SINK_SPLIT", "1") == "1"   # dK/dV: sink blocks' far queries over programs
LAST_FWD_LAUNCH = None      # the compiled forward of the last call (registers, spills, shared memory: for sweeps)
LAST_BWD_GLUON = False      # whether the last backward's dK/dV ran the Gluon kernel
LAST_DQ_GLUON = False       # whether the last backward's dQ ran the Gluon kernel (SWAA_TRITON_GLUON_DQK=1)
_MAXNREG = {"maxnreg": int(os.environ["SWAA_TRITON_MAXNREG"])} if os.environ.get("SWAA_TRITON_MAXNREG") else {}
try:
    import triton
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:  # pragma: no cover - Triton without TMA descriptors
        TensorDescriptor = None

    from ._bwd import _bwd_delta_kernel, _bwd_dkdv_kernel, _bwd_dq_kernel, _bwd_sink_sum_kernel
    from ._decode import _decode_kernel, _decode_merge_kernel
    from ._fwd import _fwd_kernel
    _IMPORT_ERROR = None
except Exception as e:  # pragma: no cover - no triton wheel
    _IMPORT_ERROR = f"triton is not importable ({e})"
try:                        # the warp-specialised Hopper forward needs Gluon (Triton >= 3.5) with its Hopper ops
    from triton.experimental.gluon import language as _gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as _GluonDescriptor

    from ._fwd_gluon import CTA_ROWS as _GLUON_ROWS
    from ._fwd_gluon import WG_ROWS as _GLUON_WG_ROWS
    from ._fwd_gluon import _fwd_gluon_kernel
    from ._bwd_gluon import KEY_ROWS as _GLUON_KEY_ROWS
    from ._bwd_gluon import _bwd_dkdv_gluon_kernel
    from ._dq_gluon import _bwd_dq_gluon_kernel
    _GLUON_ERROR = None
except Exception as e:  # pragma: no cover - depends on the Triton build
    _GLUON_ERROR = f"Gluon's Hopper ops are not importable ({e})"
# SWAA_TRITON_GLUON: "0" never, "1" wherever it can run (sm_90, TMA layout, head_dim 64/128), unset: by _gluon_auto
_GLUON_FWD = {"0": False, "1": True}.get(os.environ.get("SWAA_TRITON_GLUON", ""))
# the Gluon dK/dV kernel (_bwd_gluon.py): "0" never, otherwise wherever it can run (session 9 sweep: 24-26% faster
# than _bwd_dkdv_kernel at head_dim 64 and 128, 8k-32k)
_GLUON_BWD = os.environ.get("SWAA_TRITON_GLUON_BWD", "1") != "0"
# BLOCK_N, K stages, V stages, sink tiles visited last, consumers taking turns (session 8 sweep: neither helped)
_GLUON_CFG = tuple(int(x) for x in os.environ.get("SWAA_TRITON_GLUON_CFG", "128,3,3,0,0").split(","))
# "1": the Gluon dK/dV also computes dQ (atomic adds into fp32) instead of the separate dQ kernel. Off: correct, but
# slower (session 9, H200, 32k: 9.0 ms against 4.2 + 2.95 for the two kernels; Triton 3.6 emits one scalar
# red.global.add.f32 per element and Gluon has no TMA reduce yet)
_GLUON_DQ = os.environ.get("SWAA_TRITON_GLUON_DQ", "0") == "1"
# the fused dQ's reductions: 1 gl.atomic_add (scalar), 2 / 4 red.global.add.v2 / .v4.f32 by inline PTX (session 10,
# H200, 32k: the dK/dV kernel with fused dQ 9.2 / 9.3 / 8.0 ms; 128k 36.0 / 36.7 / 31.3)
_GLUON_DQ_VEC = int(os.environ.get("SWAA_TRITON_GLUON_DQ_VEC", "4"))
if _GLUON_DQ_VEC not in (1, 2, 4):
    raise ValueError(f"SWAA_TRITON_GLUON_DQ_VEC={_GLUON_DQ_VEC}: use 1 (scalar atomics), 2 or 4 (vector reductions)")
# the Gluon dK/dV's (Q, dO) ring stages (session 9 sweep: 3 no faster than 2)
_GLUON_BWD_STAGES = int(os.environ.get("SWAA_TRITON_GLUON_BWD_STAGES", "2"))
# "1": the Gluon dQ kernel (_dq_gluon.py) instead of _bwd_dq_kernel where it can run. Off: written in session 11
# without a GPU and not yet run on one; SWAA_TRITON_GLUON_DQK_CFG = BLOCK_N (64 or 128), K stages, V stages
_GLUON_DQK = os.environ.get("SWAA_TRITON_GLUON_DQK", "0") == "1"
_GLUON_DQK_ERROR = None                     # set when it fails to compile: the triton-language dQ from then on
_GLUON_DQK_CFG = tuple(int(x) for x in os.environ.get("SWAA_TRITON_GLUON_DQK_CFG", "64,3,3").split(","))
if len(_GLUON_DQK_CFG) != 3 or _GLUON_DQK_CFG[0] not in (64, 128) or _GLUON_DQK_CFG[1] < 2 or _GLUON_DQK_CFG[2] < 1:
    # two K stages at least: a consumer holds K_{j-1} (its dQ product) while it waits for K_j
    raise ValueError(f"SWAA_TRITON_GLUON_DQK_CFG={','.join(map(str, _GLUON_DQK_CFG))}: use BLOCK_N,K_STAGES,V_STAGES "
                     "with BLOCK_N 64 or 128, K_STAGES >= 2 and V_STAGES >= 1 (default 64,3,3)")
_TMA = os.environ.get("SWAA_TRITON_TMA", "1") != "0"      # "0": pointer loads everywhere (for comparisons)
# the dQ kernel computes delta and the backward LSE for its own rows and runs before dK/dV (no separate pass over O
# and dO); "0": _bwd_delta_kernel first, as before session 10 (for comparisons)
_DQ_PREAMBLE = os.environ.get("SWAA_TRITON_DQ_PREAMBLE", "1") != "0"


def triton_available() -> str | None:
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    if INTERPRET or torch.cuda.is_available():
        return None
    return "no CUDA device (set TRITON_INTERPRET=1 before importing swaa to run the kernels on CPU, slowly)"


def triton_unsupported(q, k, v, *, return_lse, mask, fa_from) -> str | None:
    if mask is not None or fa_from is not None:
        return "padding masks and per-row FA-decode splits go to backend='sdpa' (use the varlen entry point instead)"
    if q.device.type != "cuda" and not INTERPRET:
        return f"tensors on {q.device.type}; the Triton kernels need CUDA (or TRITON_INTERPRET=1)"
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {q.dtype} is not supported (fp16, bf16, fp32)"
    if q.shape[-1] > 256:
        return f"head_dim {q.shape[-1]} > 256"
    return None


def _blocks(d: int, kind: str):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel kind."""
    if INTERPRET:
        return 32, 32, 4, 1
    forced = os.environ.get(f"SWAA_TRITON_{kind.upper()}")     # e.g. "128,64,8,3": for tuning sweeps
    if forced:
        return tuple(int(x) for x in forced.split(","))
    big = d > 64
    if kind == "fwd":
        # H200 sweep, session 4 (scripts/dev/sweep_session4.py, one pipelined loop, TMA): 64x64 tiles on 4 warps
        # fit two programs per SM whose softmax and matrix work interleave; 448 TFLOP/s at D=128 (128x64 on 8 warps:
        # 349), 346 at D=64 with 2 stages
        return (64, 64, 4, 3) if big and d <= 128 else ((64, 32, 4, 2) if d > 128 else (64, 64, 4, 2))
    # backward, session 4 sweep at 32k W=2048 S=100 D=128: 64x64 tiles, 4 warps, 2 stages for both kernels
    # (fwd+bwd 14.9 ms against 17.0 for session 3's 32x64 dK/dV + 64x32 dQ on the same code)
    if kind in ("dkdv", "dq"):
        return (64, 64, 4, 2) if big else (64, 64, 4, 3)
    raise ValueError(kind)


def _tma_desc(t, strides, n_heads: int, block_rows: int, block_d: int, gluon: bool = False):
    """A TMA descriptor over ``t``'s storage seen as rows of its token stride, or None when the layout does not
    allow one (the kernels then use pointer loads). ``strides`` = (batch, head, token) in elements.

    Every (sequence, head) slab must start at a whole column offset of a row and hold ``block_d`` contiguous
    columns (so head_dim must be the power of two the kernel tiles with), and the storage must be whole rows:
    true for (B, H, L, D) and (B, L, H, D)-transposed dense tensors and packed (T, H, D), contiguous or not.
    """
    if not _TMA or t.dtype not in (torch.float16, torch.bfloat16):
        return None
    if TensorDescriptor is None or (not INTERPRET and _capability(t.device)[0] < 9):
        return None
    sb, sh, sl = strides
    d = t.shape[-1]
    esz = t.element_size()
    if d != block_d or t.stride(-1) != 1 or sl < d or (sl * esz) % 16 or t.data_ptr() % 16:
        return None
    span = 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    if span % sl or sb % sl:
        return None
    if sh % sl and ((n_heads - 1) * sh + d > sl or (sh * esz) % 16):
        return None
    rows = span // sl
    if gluon:
        return _GluonDescriptor(t, [rows, sl], [sl, 1], [block_rows, d], _gluon_smem_layout(block_rows, d, t.dtype))
    return TensorDescriptor(t, [rows, sl], [sl, 1], [block_rows, d])


@functools.lru_cache(maxsize=None)
def _gluon_smem_layout(rows: int, d: int, dtype):
    return _gl.NVMMASharedLayout.get_default_for([rows, d], _gl.bfloat16 if dtype == torch.bfloat16 else _gl.float16)


_CAPABILITY: dict = {}


def _capability(device) -> tuple:
    """The device's compute capability, looked up once per device (torch's lookup cost ~15 us a call, and a
    forward+backward asked 12 times: session 9 host profile)."""
    i = device.index if device.index is not None else torch.cuda.current_device()
    if i not in _CAPABILITY:
        _CAPABILITY[i] = torch.cuda.get_device_capability(i)
    return _CAPABILITY[i]


_NO_CU: dict = {}


def _no_cu(device):
    """The int32 stand-in dense launches pass for cu_seqlens, one per device (not a fresh allocation and fill per
    call)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return torch.zeros(1, dtype=torch.int32, device=device)      # not from a graph's private pool
    if device not in _NO_CU:
        _NO_CU[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _NO_CU[device]


def _dot_mode(dtype) -> int:
    if dtype == torch.float32:
        return 1
    return 2 if INTERPRET else 0


def _window(window, keep_first):
    return (_BIG_W, 0) if window is None else (int(window), int(keep_first))


def _strides_dense(t):            # (B, H, L, D)
    return t.stride(0), t.stride(1), t.stride(2)


def _strides_packed(t):           # (T, H, D)
    return 0, t.stride(1), t.stride(0)


def _dense(t) -> bool:
    """Whether ``t`` covers its storage span without gaps or overlaps, in any dimension order (what
    ``torch.empty_like`` reproduces stride for stride)."""
    expect = 1
    for st, n in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if st != expect:
            return False
        expect *= n
    return True


def _kernel_layout(t, grad: bool):
    """``t`` as the kernels take it: the last dimension contiguous; with gradients also dense, since the backward
    writes dq/dk/dv (allocated like the inputs) with the inputs' strides (a slice of a packed qkv projection is not
    dense: it gets a contiguous copy, whose gradient autograd routes back to the slice)."""
    return t if t.stride(-1) == 1 and (not grad or _dense(t)) else t.contiguous()


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


class _Geometry:
    """Strides and sizes shared by the forward and backward launches (dense or packed)."""

    def __init__(self, q, k, cu_q=None, cu_k=None, max_q=None, max_k=None):
        self.varlen = cu_q is not None
        if self.varlen:
            self.nseq = cu_q.numel() - 1
            self.hq, self.hkv, self.d = q.shape[1], k.shape[1], q.shape[2]
            self.lq, self.lk = int(max_q), int(max_k)
            self.sq, self.sk = _strides_packed(q), _strides_packed(k)
            self.lse_shape = (self.hq, q.shape[0])
            self.cu_q, self.cu_k = cu_q, cu_k
        else:
            self.nseq, self.hq, self.lq, self.d = q.shape
            self.hkv, self.lk = k.shape[1], k.shape[2]
            self.sq, self.sk = _strides_dense(q), _strides_dense(k)
            self.lse_shape = (self.nseq, self.hq, self.lq)
            self.cu_q = self.cu_k = _no_cu(q.device)
        self.groups = self.hq // self.hkv
        self.block_d = max(16, triton.next_power_of_2(self.d))
        self.dot = _dot_mode(q.dtype)

    def lse_strides(self, lse):
        if self.varlen:                       # (H, T)
            return 0, lse.stride(0), lse.stride(1)
        return lse.stride(0), lse.stride(1), lse.stride(2)


def _gluon_auto(geo: _Geometry) -> bool:
    """Whether the forward takes the Gluon kernel when nothing forces either way: at head_dim 128, where the H200
    sweep of session 8 (benchmarks/results/triton_sweep_session8_h200.json) has it 7-20% ahead of ``_fwd_kernel``
    at 32k-128k for every window tried (2048/4096, 0/100 sinks, full causal: 580 against 490 TFLOP/s). At head_dim
    64 it is 15-30% behind (one CTA per SM, and a 64-dim tile leaves the softmax too little matrix work to hide)."""
    return geo.d == 128


def _gluon_disable(why: str):
    global _GLUON_ERROR
    _GLUON_ERROR = why
    warnings.warn(f"{why.splitlines()[0]}; using the triton-language kernels", RuntimeWarning, stacklevel=3)


def _gluon_why_not(q, geo: _Geometry) -> str | None:
    """Why the Gluon forward cannot run on these inputs (None: it can)."""
    if _GLUON_ERROR:
        return _GLUON_ERROR
    if INTERPRET or q.device.type != "cuda":
        return "Gluon kernels run on CUDA only (no interpreter)"
    if _capability(q.device) != (9, 0):
        return f"compute capability {_capability(q.device)}: the kernel uses Hopper's wgmma"
    if geo.d not in (64, 128) or q.dtype not in (torch.float16, torch.bfloat16):
        return f"head_dim {geo.d} / {q.dtype}: the kernel takes head_dim 64 or 128 in fp16/bf16"
    return None


def _qkv_descs(q, k, v, sv, geo: _Geometry, bm: int, bn: int, gluon: bool = False):
    """TMA descriptors (triton-language or Gluon) for q with ``bm``-row tiles and k/v with ``bn``-row tiles; an entry
    is None where the layout allows none. ``sv``: v's (batch, head, token) strides."""
    return (_tma_desc(q, geo.sq, geo.hq, bm, geo.block_d, gluon), _tma_desc(k, geo.sk, geo.hkv, bn, geo.block_d, gluon),
            _tma_desc(v, sv, geo.hkv, bn, geo.block_d, gluon))


def _forward_gluon(q, k, v, o, lse, geo: _Geometry, w, s, scale) -> bool:
    """The warp-specialised Hopper forward into ``o``/``lse``; False when the layout has no TMA descriptors."""
    bn, k_stages, v_stages, sinks_last, pingpong = _GLUON_CFG
    so = _strides_packed(o) if geo.varlen else _strides_dense(o)
    sv = _strides_packed(v) if geo.varlen else _strides_dense(v)
    descs = _qkv_descs(q, k, v, sv, geo, _GLUON_WG_ROWS, bn, gluon=True)
    if any(x is None for x in descs):
        return False
    n_mg = triton.cdiv(geo.lq, _GLUON_ROWS) * geo.groups
    n_tiles = n_mg * geo.nseq * geo.hkv
    grid = (min(n_tiles, _sm_count(q.device)),)                    # persistent: one CTA per SM
    global LAST_FWD_LAUNCH
    # 12 warps (two 4-warp consumers, two 1-warp loaders padded to a warpgroup): 168 x 384 threads fit the 64k
    # registers, which setmaxnreg then moves to the consumers (240 each) from the loaders (24)
    LAST_FWD_LAUNCH = _fwd_gluon_kernel[grid](
        *descs, o, lse, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse),
        geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * _LOG2E, n_tiles, n_mg, D=geo.d, BLOCK_N=bn, K_STAGES=k_stages,
        V_STAGES=v_stages, VARLEN=geo.varlen, SINKS_LAST=bool(sinks_last),
        PINGPONG=bool(pingpong), num_warps=4, maxnreg=168)
    return True


def _forward(q, k, v, geo: _Geometry, w, s, scale):
    o = torch.empty_like(q)
    lse = torch.empty(geo.lse_shape, device=q.device, dtype=torch.float32)
    use_gluon = _GLUON_FWD if _GLUON_FWD is not None else _gluon_auto(geo)
    if use_gluon and _gluon_why_not(q, geo) is None:
        try:
            if _forward_gluon(q, k, v, o, lse, geo, w, s, scale):
                return o, lse
        except triton.CompilationError as e:       # a Triton whose Gluon API moved on: keep the portable kernel
            _gluon_disable(f"the Gluon forward does not compile with triton {triton.__version__}: {e}")
    bm, bn, warps, stages = _blocks(geo.d, "fwd")
    grid = (triton.cdiv(geo.lq, bm) * geo.groups, geo.nseq * geo.hkv)
    so = _strides_packed(o) if geo.varlen else _strides_dense(o)
    sv = _strides_packed(v) if geo.varlen else _strides_dense(v)
    descs = _qkv_descs(q, k, v, sv, geo, bm, bn)
    tma = all(x is not None for x in descs)
    global LAST_FWD_LAUNCH
    LAST_FWD_LAUNCH = _fwd_kernel[grid](
        *(descs if tma else (q, k, v)), o, lse, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse),
        geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * _LOG2E, D=geo.d, BLOCK_D=geo.block_d, BLOCK_M=bm, BLOCK_N=bn,
        VARLEN=geo.varlen, DOT=geo.dot, TMA=tma, LAZY=_LAZY_FWD, DEFER=_defer(geo.d),
        num_warps=warps, num_stages=stages, **_MAXNREG)
    return o, lse


def _defer(d: int) -> bool:
    """Whether the forward defers P V by one block (``_fwd_loop_deferred``). H200 sweep, session 7
    (benchmarks/results/triton_sweep_session7_h200.json, W=2048 S=100): 2.8% faster at 32k and 2.3% at 128k for
    32/8 heads x 128, 3.4% on full causal; 14% slower at head_dim 64, where the default loop runs four programs per
    SM. SWAA_TRITON_DEFER=0/1 forces it."""
    return (64 < d <= 128) if _DEFER_FWD is None else _DEFER_FWD


def _sink_split(geo: _Geometry, w, s, bm, bn):
    """(sink blocks, query blocks per chunk, partial slots) when the dK/dV kernel should split the sink blocks'
    later queries over extra programs, else None: with sinks and a window shorter than the keys (so that queries
    exist that see only the sinks), unless SWAA_TRITON_SINK_SPLIT=0. A chunk holds about as many query blocks as a
    window block's program visits, and there are at most ~64 chunks."""
    if not _SINK_SPLIT or s <= 0 or w >= geo.lk:
        return None
    nqb = triton.cdiv(geo.lq, bm)
    chunk = max(triton.cdiv(w + bn, bm), triton.cdiv(nqb, 64))
    return triton.cdiv(min(s, geo.lk), bn), chunk, 1 + triton.cdiv(nqb, chunk)


def _backward(do, q, k, v, o, lse2, geo: _Geometry, w, s, scale):
    global LAST_DQ_GLUON
    LAST_DQ_GLUON = False                  # until _dq runs the Gluon dQ kernel (not at all with fused dQ)
    do = do if do.stride() == o.stride() else torch.empty_like(o).copy_(do)
    so = _strides_packed(o) if geo.varlen else _strides_dense(o)
    sv = _strides_packed(v) if geo.varlen else _strides_dense(v)
    common = dict(D=geo.d, BLOCK_D=geo.block_d, VARLEN=geo.varlen, DOT=geo.dot)
    # delta = rowsum(dO * O) and the LSE with +inf for rows that saw nothing (lse_b): computed by the dQ kernel for
    # its own rows when it runs first, else (fused dQ) by one pass of _bwd_delta_kernel (as PyTorch ops this
    # preamble took 1.0 ms of a 12.7 ms backward at 32k on the H200: fp32 copies of O and dO)
    delta, lse_b = torch.empty_like(lse2), torch.empty_like(lse2)      # (B, H, Lq) or (H, T), lse2's strides
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def operands(bm, bn, gluon=False):  # TMA descriptors for (q, k, v, do) with these tiles, else the tensors
        descs = (*_qkv_descs(q, k, v, sv, geo, bm, bn, gluon), _tma_desc(do, so, geo.hq, bm, geo.block_d, gluon))
        tma = all(x is not None for x in descs)
        return (descs if tma else (q, k, v, do)), tma

    gluon = False                  # the Gluon dK/dV needs all four descriptors
    if _GLUON_BWD and _gluon_why_not(q, geo) is None:
        bm, bn = 64, _GLUON_KEY_ROWS
        (q_, k_, v_, do_), gluon = operands(bm, bn, gluon=True)
    fused_dq = gluon and _GLUON_DQ and geo.d == 128
    preamble = _DQ_PREAMBLE and not fused_dq
    if preamble:
        _dq(o, lse2, delta, lse_b, dq, geo, w, s, scale, operands, sv, so, common, preamble=True)
    else:
        rows, seqs = (q.shape[0], 1) if geo.varlen else (geo.lq, geo.nseq)
        block_r = 32 if INTERPRET else 64
        _bwd_delta_kernel[(triton.cdiv(rows, block_r), seqs * geo.hq)](
            o, do, lse2, delta, lse_b, rows, geo.hq, *so, *geo.lse_strides(lse2), D=geo.d, BLOCK_D=geo.block_d,
            BLOCK_R=block_r, num_warps=4)
    if not gluon:
        bm, bn, warps, stages = _blocks(geo.d, "dkdv")
        (q_, k_, v_, do_), tma = operands(bm, bn)
    nkb, heads = triton.cdiv(geo.lk, bn), geo.nseq * geo.hkv
    split = _sink_split(geo, w, s, bm, bn)
    if split:
        # the sink blocks' later queries (which see only the sinks) in chunks of about one window's work each
        nsb, chunk, parts = split
        partial = torch.zeros((2, parts, heads, nsb * bn, geo.block_d), device=q.device, dtype=torch.float32)
        dkp, dvp = partial[0], partial[1]
    else:
        nsb, chunk, parts, dkp, dvp = 1, 1, 1, dk, dv
    global LAST_BWD_GLUON
    LAST_BWD_GLUON = gluon
    grid = (nkb + nsb * (parts - 1), heads)                               # no split: parts == 1, one per block
    args = (lse_b, delta, dk, dv, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse_b), geo.lq,
            geo.lk, geo.hkv, geo.groups, w, s, scale * _LOG2E, dkp, dvp, nkb, nsb, chunk)
    if gluon:                  # 12 warps as in the Gluon forward: two 240-register consumers, one loader
        dq_acc = torch.zeros_like(q, dtype=torch.float32) if fused_dq else dq        # q's strides
        try:
            _bwd_dkdv_gluon_kernel[grid](q_, k_, v_, do_, *args, dq_acc, D=geo.d, BLOCK_M=bm, BLOCK_N=bn,
                                         STAGES=_GLUON_BWD_STAGES, VARLEN=geo.varlen, SPLIT=bool(split),
                                         FUSED_DQ=fused_dq, DQ_VEC=_GLUON_DQ_VEC if fused_dq else 1, num_warps=4,
                                         maxnreg=168)
        except triton.CompilationError as e:       # as in _forward: the Gluon kernels off, this backward again
            _gluon_disable(f"the Gluon dK/dV does not compile with triton {triton.__version__}: {e}")
            return _backward(do, q, k, v, o, lse2, geo, w, s, scale)
    else:
        _bwd_dkdv_kernel[grid](q_, k_, v_, do_, *args, BLOCK_M=bm, BLOCK_N=bn, TMA=tma, SPLIT=bool(split),
                               num_warps=warps, num_stages=stages, **common)
    if split:
        # 64-key blocks of the partials (rows nsb * bn per slot): a 128-key fp32 tile is too big for the sum kernel
        sb = min(bn, 64)
        _bwd_sink_sum_kernel[(nsb * bn // sb, heads)](dkp, dvp, dk, dv, geo.cu_k, *geo.sk, *sv, geo.lk, geo.hkv,
                                                      nsb * bn // sb, parts, D=geo.d, BLOCK_D=geo.block_d,
                                                      BLOCK_N=sb, VARLEN=geo.varlen)
    if fused_dq:
        return dq.copy_(dq_acc), dk, dv
    if not preamble:
        _dq(o, lse_b, delta, lse_b, dq, geo, w, s, scale, operands, sv, so, common, preamble=False)
    return dq, dk, dv


def _dq(o, lse, delta, lse_b, dq, geo: _Geometry, w, s, scale, operands, sv, so, common, preamble: bool):
    """The dQ kernel into ``dq`` (``lse``: lse_b, or with ``preamble`` the forward's LSE, and then it also writes
    ``delta`` and ``lse_b`` from ``o`` and dO, and must run before the dK/dV kernel)."""
    global LAST_DQ_GLUON, _GLUON_DQK_ERROR
    if _GLUON_DQK and _GLUON_DQK_ERROR is None and _gluon_why_not(o, geo) is None:
        bn, k_stages, v_stages = _GLUON_DQK_CFG
        (q_, k_, v_, do_), tma = operands(_GLUON_WG_ROWS, bn, gluon=True)
        if tma:
            n_mg = triton.cdiv(geo.lq, _GLUON_ROWS) * geo.groups
            n_tiles = n_mg * geo.nseq * geo.hkv
            try:            # persistent as the Gluon forward, whose 12-warp register split it shares
                _bwd_dq_gluon_kernel[(min(n_tiles, _sm_count(o.device)),)](
                    q_, k_, v_, do_, lse, delta, dq, o, lse_b, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so,
                    *geo.lse_strides(lse), geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * _LOG2E, n_tiles, n_mg,
                    D=geo.d, BLOCK_N=bn, K_STAGES=k_stages, V_STAGES=v_stages, VARLEN=geo.varlen, PREAMBLE=preamble,
                    num_warps=4, maxnreg=168)
                LAST_DQ_GLUON = True
                return
            except triton.CompilationError as e:       # the triton-language dQ below, from now on
                _GLUON_DQK_ERROR = f"the Gluon dQ does not compile with triton {triton.__version__}: {e}"
                warnings.warn(f"{_GLUON_DQK_ERROR.splitlines()[0]}; using the triton-language dQ kernel",
                              RuntimeWarning, stacklevel=2)
    bm, bn, warps, stages = _blocks(geo.d, "dq")
    (q_, k_, v_, do_), tma = operands(bm, bn)
    _bwd_dq_kernel[(triton.cdiv(geo.lq, bm) * geo.groups, geo.nseq * geo.hkv)](
        q_, k_, v_, do_, lse, delta, dq, geo.cu_q, geo.cu_k, *geo.sq, *geo.sk, *sv, *so, *geo.lse_strides(lse),
        geo.lq, geo.lk, geo.hq, geo.groups, w, s, scale * _LOG2E, o, lse_b,
        BLOCK_M=bm, BLOCK_N=bn, TMA=tma, PREAMBLE=preamble, num_warps=warps, num_stages=stages, **common)


class _SWAAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, w, s, scale):
        geo = _Geometry(q, k, cu_q, cu_k, max_q, max_k)
        o, lse2 = _forward(q, k, v, geo, w, s, scale)
        ctx.save_for_backward(q, k, v, o, lse2)
        ctx.geo, ctx.ws = geo, (w, s, scale)
        ctx.mark_non_differentiable(lse2)
        return o, lse2

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse2 = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse2, ctx.geo, *ctx.ws)
        return dq, dk, dv, None, None, None, None, None, None, None


def _scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def triton_attention(q, k, v, *, window, keep_first, scale, return_lse, mask=None, fa_from=None):
    """Dense layout entry point (the registry's): decode shapes without grad take the split-KV kernel."""
    needs_grad = _needs_grad(q, k, v)
    q, k, v = (_kernel_layout(t, needs_grad) for t in (q, k, v))
    w, s = _window(window, keep_first)
    sc = _scale(q, scale)
    if not needs_grad and q.shape[2] <= 16 and k.shape[2] >= 256:
        out, lse2 = triton_decode(q, k, v, window=window, keep_first=keep_first, scale=sc, _base2=True)
    else:
        out, lse2 = _SWAAFunction.apply(q, k, v, None, None, None, None, w, s, sc)
    return (out, lse2 * math.log(2.0)) if return_lse else out


def swaa_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, *,
                          sliding_window_size=None, keep_first: int = 0, scale=None, return_lse: bool = False):
    """Packed sequences: q (total_q, Hq, D), k/v (total_k, Hkv, D); sequence i is rows cu[i]:cu[i+1].

    Each sequence follows the SWAA rule on its own positions (queries aligned to the end of its keys). Returns
    out (total_q, Hq, D) [, lse (Hq, total_q) natural log]. Differentiable.
    """
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
    grad = _needs_grad(q, k, v)
    q, k, v = (_kernel_layout(t, grad) for t in (q, k, v))
    w, s = _window(sliding_window_size, keep_first)
    out, lse2 = _SWAAFunction.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, w, s,
                                    _scale(q, scale))
    return (out, lse2 * math.log(2.0)) if return_lse else out


def _decode_spans(lq, lk, window, keep_first):
    """The key spans a decode step reads: (sink_end, window_start). Keys [0, sink_end) and [window_start, lk)."""
    if window is None:
        return 0, 0
    lo_w = max(0, lk - lq - window + 1)
    return min(keep_first, lo_w), lo_w


def _decode_ranges(lq, lk, window, keep_first, chunk):
    """The (start, end) key chunks the decode programs take (the kernel derives the same from the spans)."""
    sink_end, lo_w = _decode_spans(lq, lk, window, keep_first)
    out = [(c, min(sink_end, c + chunk)) for c in range(0, sink_end, chunk)]
    out += [(c, min(lk, c + chunk)) for c in range(lo_w, lk, chunk)]
    return out or [(0, 0)]


def triton_decode(q, k, v, *, window=None, keep_first=0, scale=None, return_lse=False, chunk=None, _base2=False,
                  kv_len: torch.Tensor | None = None):
    """Split-KV decode: q (B, Hq, Lq<=16, D) against k/v (B, Hkv, Lk, D). Returns out [, lse].

    Two launches: the split kernel (each program derives its key chunk from the spans, no index tensor) and the
    merge kernel (LSE-weighted sum of the partial outputs). ``kv_len``: a one-element integer tensor on q's device
    holding how many leading key slots are valid (full attention over a static buffer that a CUDA graph replays:
    no host sync, the launch depends only on the buffer's size); the queries are the last ``Lq`` of those."""
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
    sc = _scale(q, scale)
    w, s = _window(window, keep_first)
    # H200 sweep (benchmarks/results/triton_sweep_session3_h200.json): 128-key blocks, 4 warps, 2 stages, 3 splits
    # per SM read a 128k cache at 3.3 TB/s (79% of the card's copy bandwidth)
    bn, warps, stages, split_factor = (32, 4, 1, 1) if INTERPRET else (128, 4, 2, 3)
    forced = os.environ.get("SWAA_TRITON_DECODE")          # "block_n,warps,stages,splits_per_SM" for sweeps
    if forced and not INTERPRET:
        bn, warps, stages, split_factor = (int(x) for x in forced.split(","))
    sink_end, lo_w = _decode_spans(lq, lk, window, keep_first)
    n_vis = sink_end + (lk - lo_w)
    if chunk is None:
        sms = 1 if INTERPRET else _sm_count(q.device)
        splits = max(1, -(-split_factor * sms // max(1, b * hkv)))
        per_split = -(-n_vis // splits)                       # ceil
        chunk = max(bn, -(-per_split // bn) * bn)              # rounded up to whole key blocks
    n_sink_chunks = -(-sink_end // chunk)
    ns = max(1, n_sink_chunks + -(-(lk - lo_w) // chunk))
    po = torch.empty(ns, b, hq, lq, d, device=q.device, dtype=torch.float32)
    pl = torch.empty(ns, b, hq, lq, device=q.device, dtype=torch.float32)
    block_r = max(16, triton.next_power_of_2(groups * lq))
    block_d = max(16, triton.next_power_of_2(d))
    _decode_kernel[(ns, b * hkv)](
        q, k, v, po, pl, *_strides_dense(q), *_strides_dense(k), *_strides_dense(v),
        po.stride(0), po.stride(1), po.stride(2), po.stride(3), pl.stride(0), pl.stride(1), pl.stride(2),
        lq, lk, hkv, groups, w, s, sc * _LOG2E, sink_end, lo_w, chunk, n_sink_chunks,
        kv_len if kv_len is not None else q, D=d, BLOCK_D=block_d, BLOCK_R=block_r, BLOCK_N=bn,
        DOT=_dot_mode(q.dtype), DEV_LK=kv_len is not None, num_warps=warps, num_stages=stages)
    out = torch.empty_like(q)
    lse2 = torch.empty(b, hq, lq, device=q.device, dtype=torch.float32)
    _decode_merge_kernel[(b * hq * lq,)](po, pl, out, lse2, ns, b * hq * lq, *_strides_dense(out),
                                         hq, lq, D=d, BLOCK_D=block_d, BLOCK_S=max(16, triton.next_power_of_2(ns)))
    if _base2:
        return out, lse2
    return (out, lse2 * math.log(2.0)) if return_lse else out


@functools.lru_cache(maxsize=8)
def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count
