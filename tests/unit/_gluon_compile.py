"""Compile a Gluon kernel (the forward, the dK/dV, the dQ) for sm_90a and print what the compiler made of it as one
JSON line. Run as ``python -m tests.unit._gluon_compile '{"d": 128, ...}'`` without TRITON_INTERPRET (the
interpreter swaps the kernels' triton.jit helpers for Python functions that a compiled kernel cannot call); used by
test_triton_gluon.py."""
import json
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type

import swaa.attention.triton as T


class _FakeBase:            # what a descriptor needs to state its type: a dtype and an aligned pointer
    dtype = torch.bfloat16

    def data_ptr(self):
        return 0


def compile_gluon(d, block_n, k_stages=2, v_stages=2, varlen=False, sinks_last=False, pingpong=False, bwd=False,
                  fused_dq=False, dq_vec=1, dq=False, preamble=True):
    """The forward (or with ``bwd`` the dK/dV kernel, block_n keys per CTA, in the wrapper's default configuration;
    with ``dq`` the Gluon dQ kernel with block_n-key tiles)."""
    if dq:
        fn = T._bwd_dq_gluon_kernel
        const = dict(D=d, BLOCK_N=block_n, K_STAGES=k_stages, V_STAGES=v_stages, VARLEN=varlen, PREAMBLE=preamble)
        rows_of = lambda a: T._GLUON_WG_ROWS if a in ("q_desc", "do_desc") else block_n
    elif bwd:
        fn = T._bwd_dkdv_gluon_kernel
        const = dict(D=d, BLOCK_M=64, BLOCK_N=block_n, STAGES=T._GLUON_BWD_STAGES, VARLEN=varlen, SPLIT=True,
                     FUSED_DQ=fused_dq, DQ_VEC=dq_vec)
        rows_of = lambda a: 64 if a in ("q_desc", "do_desc") else block_n
    else:
        fn = T._fwd_gluon_kernel
        const = dict(D=d, BLOCK_N=block_n, K_STAGES=k_stages, V_STAGES=v_stages, VARLEN=varlen,
                     SINKS_LAST=sinks_last, PINGPONG=pingpong)
        rows_of = lambda a: T._GLUON_WG_ROWS if a == "q_desc" else block_n
    sig = {}
    for a in fn.arg_names:
        if a in const:
            sig[a] = "constexpr"
        elif a.endswith("_desc"):
            rows = rows_of(a)
            layout = gl.NVMMASharedLayout.get_default_for([rows, d], gl.bfloat16)
            sig[a] = mangle_type(T._GluonDescriptor(_FakeBase(), [4096, d], [d, 1], [rows, d], layout))
        elif a in ("O", "LSE", "cu_q", "cu_k", "DELTA", "DK", "DV", "DKP", "DVP", "DQ", "LSE_B"):
            sig[a] = {"O": "*bf16", "DK": "*bf16", "DV": "*bf16", "cu_q": "*i32", "cu_k": "*i32"}.get(a, "*fp32")
            if dq and a == "DQ":
                sig[a] = "*bf16"                                 # the Gluon dQ stores dq in the inputs' dtype
        else:
            sig[a] = "fp32" if a == "qk_scale" else "i32"
    k = triton.compile(GluonASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=4, maxnreg=168))
    return dict(shared=k.metadata.shared, ttgir=k.asm["ttgir"], ptx=k.asm["ptx"])


if __name__ == "__main__":
    print(json.dumps(compile_gluon(**json.loads(sys.argv[1]))))
