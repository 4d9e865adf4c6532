"""Launch parameters of our kernels: one table per kernel kind, keyed by GPU architecture and head_dim.

Each entry is what the H200 measurements in docs/kernels.md chose ("Tiles and stages" has the figures and the
alternatives that lost). Under ``TRITON_INTERPRET=1`` (CPU tests) small tiles keep the interpreter fast.
"""
from __future__ import annotations

import os

__all__ = ["INTERPRET", "tiles", "defer_pv", "gluon_runs", "GLUON_FWD", "GLUON_DKDV", "GLUON_DQ", "DECODE", "DECODE_ONE_PASS"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (BLOCK_M, BLOCK_N, num_warps, num_stages) of the triton-language kernels by head_dim class (<= 64, <= 128, > 128):
# 64 x 64 tiles on 4 warps fit two programs per SM whose softmax and matrix work interleave
_TILES = {
    "fwd": {64: (64, 64, 4, 2), 128: (64, 64, 4, 3), 256: (64, 32, 4, 2)},
    "dkdv": {64: (64, 64, 4, 3), 128: (64, 64, 4, 2), 256: (64, 64, 4, 2)},
    "dq": {64: (64, 64, 4, 3), 128: (64, 64, 4, 2), 256: (64, 64, 4, 2)},
}
_TILES_INTERPRET = (32, 32, 4, 1)

# where the warp-specialised Gluon kernels run: kernel -> {compute capability: head_dims}. The forward is ahead at
# head_dim 128 and behind at 64 (one CTA per SM leaves a 64-wide tile too little matrix work to hide its softmax)
# (the Gluon dQ is ahead at head_dim 128 and 2-4% behind the triton-language one at 64)
GLUON = {
    "fwd": {(9, 0): (128,)},
    "dkdv": {(9, 0): (64, 128)},
    "dq": {(9, 0): (128,)},
}
GLUON_FWD = dict(BLOCK_N=128, K_STAGES=3, V_STAGES=3)          # 64-query consumers, persistent
GLUON_DKDV = dict(BLOCK_M=64, BLOCK_N=128, STAGES=2)            # 128 keys per CTA, a (Q, dO) ring of 2
GLUON_DQ = dict(BLOCK_N=64, K_STAGES=3, V_STAGES=3)             # 64-query consumers, persistent

# split-KV decode: (BLOCK_N, warps, stages, splits per SM) of the split kernel, and the one-pass launch's (BLOCK_N,
# warps, stages) with the most visible keys it takes. One program per (sequence, KV head) walking a 2k-key window
# runs 28-30 us on an H200 against 7-25 us for the split kernel and its merge, but one launch halves the host's
# cost of a call (~50 against ~95 us), which is what an eager decode step pays (docs/kernels.md, decode table)
DECODE = (128, 4, 2, 3)
DECODE_ONE_PASS = (128, 8, 3, 4096)
_DECODE_INTERPRET = (32, 4, 1, 1)
_DECODE_ONE_PASS_INTERPRET = (32, 4, 1, 64)


def _dim_class(d: int) -> int:
    return 64 if d <= 64 else (128 if d <= 128 else 256)


def tiles(kind: str, d: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the triton-language kernel ``kind`` (fwd, dkdv, dq)."""
    return _TILES_INTERPRET if INTERPRET else _TILES[kind][_dim_class(d)]


def defer_pv(d: int) -> bool:
    """Whether the triton-language forward defers P V by one key block (``_fwd_loop_deferred``): ahead at
    64 < head_dim <= 128, behind at 64, where the plain loop runs four programs per SM."""
    return 64 < d <= 128


def gluon_runs(kind: str, capability: tuple, d: int) -> bool:
    """Whether the Gluon kernel of ``kind`` is the one for this architecture and head_dim."""
    return d in GLUON[kind].get(tuple(capability), ())


def decode_params() -> tuple[int, int, int, int]:
    """(BLOCK_N, warps, stages, splits per SM) of the split decode."""
    return _DECODE_INTERPRET if INTERPRET else DECODE


def decode_one_pass_params() -> tuple[int, int, int, int]:
    """(BLOCK_N, warps, stages, most visible keys) of the one-pass decode."""
    return _DECODE_ONE_PASS_INTERPRET if INTERPRET else DECODE_ONE_PASS
