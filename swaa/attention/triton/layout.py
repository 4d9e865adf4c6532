"""What the kernel wrappers share: tensor layouts, strides, TMA descriptors, device facts.

Dense tensors are (B, H, L, D) with any strides whose last dimension is contiguous; packed ones (T, H, D) with
``cu_seqlens``. The kernels take (batch, head, token) strides in elements; packed layouts pass a batch stride of 0.
"""
from __future__ import annotations

import functools
import math

import torch

from .tuning import INTERPRET

try:
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - no triton wheel, or one without TMA descriptors
    triton = TensorDescriptor = None

LOG2E = 1.4426950408889634
BIG_W = 1 << 30                     # "no window": wider than any sequence


def window_args(window, keep_first) -> tuple[int, int]:
    return (BIG_W, 0) if window is None else (int(window), int(keep_first))


def softmax_scale(q, scale) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def strides_dense(t):            # (B, H, L, D)
    return t.stride(0), t.stride(1), t.stride(2)


def strides_packed(t):           # (T, H, D)
    return 0, t.stride(1), t.stride(0)


def is_dense(t) -> bool:
    """Whether ``t`` covers its storage span without gaps or overlaps, in any dimension order (what
    ``torch.empty_like`` reproduces stride for stride)."""
    expect = 1
    for st, n in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if st != expect:
            return False
        expect *= n
    return True


def kernel_layout(t, grad: bool):
    """``t`` as the kernels take it: the last dimension contiguous; with gradients also dense, since the backward
    writes dq/dk/dv (allocated like the inputs) with the inputs' strides (a slice of a packed qkv projection is not
    dense: it gets a contiguous copy, whose gradient autograd routes back to the slice)."""
    return t if t.stride(-1) == 1 and (not grad or is_dense(t)) else t.contiguous()


def needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def dot_mode(dtype) -> int:
    """The kernels' DOT: 0 native tensor-core dots, 1 IEEE fp32 (fp32 inputs), 2 upcast first (the interpreter)."""
    if dtype == torch.float32:
        return 1
    return 2 if INTERPRET else 0


_CAPABILITY: dict = {}


def capability(device) -> tuple:
    """The device's compute capability, looked up once per device (torch's lookup costs ~15 us a call)."""
    i = device.index if device.index is not None else torch.cuda.current_device()
    if i not in _CAPABILITY:
        _CAPABILITY[i] = torch.cuda.get_device_capability(i)
    return _CAPABILITY[i]


@functools.lru_cache(maxsize=8)
def sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


_NO_CU: dict = {}


def no_cu(device):
    """The int32 stand-in dense launches pass for cu_seqlens, one per device (not a fresh allocation per call)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return torch.zeros(1, dtype=torch.int32, device=device)      # not from a graph's private pool
    if device not in _NO_CU:
        _NO_CU[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _NO_CU[device]


def tma_rows(t, strides, n_heads: int, block_d: int):
    """(rows, row length) of ``t``'s storage seen as rows of its token stride, for a TMA descriptor; None when the
    layout allows none (the kernels then use pointer loads). ``strides`` = (batch, head, token) in elements.

    Every (sequence, head) slab must start at a whole column offset of a row and hold ``block_d`` contiguous
    columns (so head_dim must be the power of two the kernel tiles with), and the storage must be whole rows:
    true for (B, H, L, D) and (B, L, H, D)-transposed dense tensors and packed (T, H, D), contiguous or not.
    """
    if t.dtype not in (torch.float16, torch.bfloat16):
        return None
    if not INTERPRET and capability(t.device)[0] < 9:
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
    return span // sl, sl


def tma_desc(t, strides, n_heads: int, block_rows: int, block_d: int):
    """A triton-language TMA descriptor over ``t`` with ``block_rows``-row tiles, or None (see :func:`tma_rows`)."""
    if TensorDescriptor is None:
        return None
    rows = tma_rows(t, strides, n_heads, block_d)
    return None if rows is None else TensorDescriptor(t, [rows[0], rows[1]], [rows[1], 1], [block_rows, t.shape[-1]])


class Geometry:
    """Strides and sizes shared by the forward and backward launches (dense or packed)."""

    def __init__(self, q, k, cu_q=None, cu_k=None, max_q=None, max_k=None):
        self.varlen = cu_q is not None
        if self.varlen:
            self.nseq = cu_q.numel() - 1
            self.hq, self.hkv, self.d = q.shape[1], k.shape[1], q.shape[2]
            self.lq, self.lk = int(max_q), int(max_k)
            self.sq, self.sk = strides_packed(q), strides_packed(k)
            self.lse_shape = (self.hq, q.shape[0])
            self.cu_q, self.cu_k = cu_q, cu_k
        else:
            self.nseq, self.hq, self.lq, self.d = q.shape
            self.hkv, self.lk = k.shape[1], k.shape[2]
            self.sq, self.sk = strides_dense(q), strides_dense(k)
            self.lse_shape = (self.nseq, self.hq, self.lq)
            self.cu_q = self.cu_k = no_cu(q.device)
        self.groups = self.hq // self.hkv
        self.block_d = max(16, triton.next_power_of_2(self.d))
        self.dot = dot_mode(q.dtype)

    def strides(self, t):
        """(batch, head, token) strides of a tensor laid out like q or k."""
        return strides_packed(t) if self.varlen else strides_dense(t)

    def lse_strides(self, lse):
        if self.varlen:                       # (H, T)
            return 0, lse.stride(0), lse.stride(1)
        return lse.stride(0), lse.stride(1), lse.stride(2)
