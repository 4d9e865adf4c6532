"""Compile a Gluon kernel (the forward, the dK/dV, the dQ) for sm_90a and print what the compiler made of it as one
JSON line. Run as ``python -m tests.unit._gluon_compile '{"kind": "fwd", "d": 128, ...}'`` without TRITON_INTERPRET
(the interpreter swaps the kernels' triton.jit helpers for Python functions that a compiled kernel cannot call); used
by test_triton_gluon.py."""
import json
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type

from swaa.attention.triton import gluon, tuning


class _FakeBase:            # what a descriptor needs to state its type: a dtype and an aligned pointer
    dtype = torch.bfloat16

    def data_ptr(self):
        return 0


def compile_gluon(kind, d, varlen=False, **cfg):
    """The Gluon kernel of ``kind`` (fwd, dkdv, dq) in the tuning table's configuration, or with ``cfg``'s."""
    if kind == "dq":
        fn, const = gluon._bwd_dq_gluon_kernel, {**tuning.GLUON_DQ, **cfg}
        rows_of = lambda a: gluon.WG_ROWS if a in ("q_desc", "do_desc") else const["BLOCK_N"]
    elif kind == "dkdv":
        fn, const = gluon._bwd_dkdv_gluon_kernel, {**tuning.GLUON_DKDV, **cfg, "SPLIT": True}
        rows_of = lambda a: const["BLOCK_M"] if a in ("q_desc", "do_desc") else const["BLOCK_N"]
    else:
        fn, const = gluon._fwd_gluon_kernel, {**tuning.GLUON_FWD, **cfg}
        rows_of = lambda a: gluon.WG_ROWS if a == "q_desc" else const["BLOCK_N"]
    const.update(D=d, VARLEN=varlen)
    sig = {}
    for a in fn.arg_names:
        if a in const:
            sig[a] = "constexpr"
        elif a.endswith("_desc"):
            rows = rows_of(a)
            layout = gl.NVMMASharedLayout.get_default_for([rows, d], gl.bfloat16)
            sig[a] = mangle_type(gluon.GluonDescriptor(_FakeBase(), [4096, d], [d, 1], [rows, d], layout))
        elif a in ("O", "DK", "DV", "DQ"):
            sig[a] = "*bf16"
        elif a in ("cu_q", "cu_k"):
            sig[a] = "*i32"
        elif a in ("LSE", "DELTA", "DKP", "DVP", "LSE_B"):
            sig[a] = "*fp32"
        else:
            sig[a] = "fp32" if a == "qk_scale" else "i32"
    k = triton.compile(GluonASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=4, maxnreg=168))
    return dict(shared=k.metadata.shared, ttgir=k.asm["ttgir"])


if __name__ == "__main__":
    print(json.dumps(compile_gluon(**json.loads(sys.argv[1]))))
