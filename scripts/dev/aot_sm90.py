"""Developer tool: compile our forward and dK/dV kernels for an H100/H200 (sm_90a) on a machine without a GPU and
print what the compiler reports: shared memory, registers and spills (ptxas -v), with the TTGIR, PTX and SASS
dumped for reading. Specialises the integer arguments as the JIT does on the GPU (1 -> constexpr, multiples of 16
-> divisibility), so the numbers come close to the GPU's (session 7, default forward at head_dim 128: 114744 bytes
/ 167 registers here against 114744 / 166 on the H200; at head_dim 64, 153 registers here against 121 there:
compare variants with it, not digits).

Needs a Triton of the GPU box's version and no torch (the kernels' modules import triton only):

    python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0
    /tmp/t36/bin/python scripts/dev/aot_sm90.py fwd 64,64,4,3 DEFER=1
    /tmp/t36/bin/python scripts/dev/aot_sm90.py dkdv 64,64,4,2
    /tmp/t36/bin/python scripts/dev/aot_sm90.py gluon 128,128,4,1 K_STAGES=2 V_STAGES=2
    /tmp/t36/bin/python scripts/dev/aot_sm90.py gluon_bwd 64,128,4,1 STAGES=2
    /tmp/t36/bin/python scripts/dev/aot_sm90.py gluon_dq 64,64,4,1 K_STAGES=3 V_STAGES=3 PREAMBLE=1
    # dumps: $AOT_OUT (default /tmp/aot)/<kind>_<cfg>.{ttgir,ptx,sass}
"""
import importlib.util
import os
import re
import subprocess
import sys
import types

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "swaa", "attention", "triton")
OUT = os.environ.get("AOT_OUT", "/tmp/aot")
TARGET = GPUTarget("cuda", 90, 32)
GLUON_MAXNREG = 168          # the wrapper's launch value for the Gluon forward (12 warps: 168 * 384 <= 65536)
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def load(name):
    """A kernel module of swaa/attention/triton without its package __init__ (which imports torch)."""
    if "swk" not in sys.modules:
        pkg = types.ModuleType("swk")
        pkg.__path__ = [SRC]
        sys.modules["swk"] = pkg
    spec = importlib.util.spec_from_file_location(f"swk.{name}", os.path.join(SRC, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"swk.{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def compile_report(fn, sig, const, values, warps, stages, tag):
    backend = CUDABackend(TARGET)
    div = []
    for n, v in values.items():                       # the JIT's integer specialisation
        if sig.get(n) == "i32" and v == 1:
            sig[n], const[n] = "constexpr", 1
        elif sig.get(n) == "i32" and v % 16 == 0:
            div.append(n)
    attrs = {(fn.arg_names.index(n),): backend.parse_attr("D") for n in div}
    gluon = getattr(fn, "is_gluon", lambda: False)()   # Gluon kernels: the wrapper's maxnreg
    src = (GluonASTSource if gluon else ASTSource)(fn, sig, const, attrs)
    opts = dict(num_warps=warps, num_stages=stages)
    if gluon:
        opts["maxnreg"] = GLUON_MAXNREG
    k = triton.compile(src, target=TARGET, options=opts)
    os.makedirs(OUT, exist_ok=True)
    base = os.path.join(OUT, tag)
    for key in ("ttgir", "ptx"):
        with open(f"{base}.{key}", "w") as f:
            f.write(k.asm[key])
    r = subprocess.run([f"{BIN}/ptxas", "-v", "--gpu-name=sm_90a", f"{base}.ptx", "-o", f"{base}.cubin"],
                       capture_output=True, text=True)
    sass = subprocess.run([f"{BIN}/cuobjdump", "-sass", f"{base}.cubin"], capture_output=True, text=True).stdout
    with open(f"{base}.sass", "w") as f:
        f.write(sass)
    regs = re.search(r"Used (\d+) registers", r.stderr)
    spill = re.search(r"(\d+) bytes spill stores", r.stderr)
    return dict(smem=k.metadata.shared, regs=int(regs.group(1)) if regs else None,
                spill_bytes=int(spill.group(1)) if spill else None,
                warp_specialized="ttg.warp_specialize" in k.asm["ttgir"], dumps=base)


def build(kind, bm, bn, n=32768, hq=32, hkv=8, d=128, W=2048, S=100, **flags):
    """(kernel, signature, constexprs, argument values) for a dense bf16 TMA launch like the wrapper's."""
    if kind == "gluon":                              # the warp-specialised Hopper forward (_fwd_gluon.py)
        mod = load("_fwd_gluon")
        fn = mod._fwd_gluon_kernel
        const = dict(D=d, BLOCK_N=bn, K_STAGES=int(flags.pop("K_STAGES", 2)), V_STAGES=int(flags.pop("V_STAGES", 2)),
                     VARLEN=False)
        lay = lambda rows: mod.gl.NVMMASharedLayout.get_default_for([rows, d], mod.gl.bfloat16)
        descs = dict(q_desc=(64, lay(64)), k_desc=(bn, lay(bn)), v_desc=(bn, lay(bn)))
        ptrs = dict(O="*bf16", LSE="*fp32", cu_q="*i32", cu_k="*i32")
        extra = dict(H=hq, n_tiles=(n // 128) * hq, n_mg=(n // 128) * (hq // hkv))
    elif kind == "gluon_bwd":                        # the warp-specialised Hopper dK/dV (_bwd_gluon.py)
        mod = load("_bwd_gluon")
        fn = mod._bwd_dkdv_gluon_kernel
        const = dict(D=d, BLOCK_M=bm, BLOCK_N=bn, STAGES=int(flags.pop("STAGES", 2)), VARLEN=False, SPLIT=True,
                     FUSED_DQ=bool(int(flags.pop("FUSED_DQ", 0))))
        lay = lambda rows: mod.gl.NVMMASharedLayout.get_default_for([rows, d], mod.gl.bfloat16)
        descs = dict(q_desc=(bm, lay(bm)), do_desc=(bm, lay(bm)), k_desc=(bn, lay(bn)), v_desc=(bn, lay(bn)))
        ptrs = dict(LSE="*fp32", DELTA="*fp32", DK="*bf16", DV="*bf16", cu_q="*i32", cu_k="*i32", DKP="*fp32",
                    DVP="*fp32", DQ="*fp32")
        extra = dict(HKV=hkv, NKB=n // bn, NSB=-(-S // bn), CHUNK=-(-(W + bn) // bm))
    elif kind == "gluon_dq":                         # the warp-specialised Hopper dQ (_dq_gluon.py), opt-in
        mod = load("_dq_gluon")
        fn = mod._bwd_dq_gluon_kernel
        const = dict(D=d, BLOCK_N=bn, K_STAGES=int(flags.pop("K_STAGES", 3)), V_STAGES=int(flags.pop("V_STAGES", 3)),
                     VARLEN=False, PREAMBLE=bool(int(flags.pop("PREAMBLE", 1))))
        lay = lambda rows: mod.gl.NVMMASharedLayout.get_default_for([rows, d], mod.gl.bfloat16)
        descs = dict(q_desc=(64, lay(64)), do_desc=(64, lay(64)), k_desc=(bn, lay(bn)), v_desc=(bn, lay(bn)))
        ptrs = dict(LSE="*fp32", DELTA="*fp32", DQ="*bf16", O="*bf16", LSE_B="*fp32", cu_q="*i32", cu_k="*i32")
        extra = dict(H=hq, n_tiles=(n // 128) * hq, n_mg=(n // 128) * (hq // hkv))
    elif kind == "fwd":
        fn = load("_fwd")._fwd_kernel
        const = dict(D=d, BLOCK_D=d, BLOCK_M=bm, BLOCK_N=bn, VARLEN=False, DOT=0, TMA=True, LAZY=False, DEFER=False)
        descs = dict(Q=bm, K=bn, V=bn)
        ptrs = dict(O="*bf16", LSE="*fp32", cu_q="*i32", cu_k="*i32")
        extra = dict(H=hq)
    else:
        fn = load("_bwd")._bwd_dkdv_kernel
        const = dict(D=d, BLOCK_D=d, BLOCK_M=bm, BLOCK_N=bn, VARLEN=False, DOT=0, TMA=True, SPLIT=True)
        descs = dict(Q=bm, DO=bm, K=bn, V=bn)
        ptrs = dict(LSE="*fp32", DELTA="*fp32", DK="*bf16", DV="*bf16", cu_q="*i32", cu_k="*i32", DKP="*fp32",
                    DVP="*fp32")
        extra = dict(HKV=hkv, NKB=n // bn, NSB=-(-S // bn), CHUNK=-(-(W + bn) // bm))
    for k, v in flags.items():                       # e.g. DEFER=1, SPLIT=0
        const[k] = (v == "1") if isinstance(const.get(k), bool) else int(v)
    sig = {}
    for a in fn.arg_names:
        if a in const:
            sig[a] = "constexpr"
        elif a in descs and isinstance(descs[a], tuple):
            sig[a] = f"tensordesc<bf16[{descs[a][0]}, {d}],{descs[a][1]}>"
        elif a in descs:
            sig[a] = f"tensordesc<bf16[{descs[a]},{d}]>"
        else:
            sig[a] = ptrs.get(a, "fp32" if a == "qk_scale" else "i32")
    values = dict(stride_qb=hq * n * d, stride_qh=n * d, stride_qm=d, stride_kb=hkv * n * d, stride_kh=n * d,
                  stride_kn=d, stride_vb=hkv * n * d, stride_vh=n * d, stride_vn=d, stride_ob=hq * n * d,
                  stride_oh=n * d, stride_om=d, stride_lb=hq * n, stride_lh=n, stride_lm=1, Lq_fixed=n, Lk_fixed=n,
                  GROUPS=hq // hkv, W=W, S=S, **extra)
    return fn, sig, const, values


if __name__ == "__main__":
    kind, cfg, *rest = sys.argv[1:]
    bm, bn, warps, stages = (int(x) for x in cfg.split(","))
    flags = dict(x.split("=") for x in rest)
    shape = {k: int(flags.pop(k)) for k in ("n", "hq", "hkv", "d", "W", "S") if k in flags}
    fn, sig, const, values = build(kind, bm, bn, **shape, **flags)
    print(kind, cfg, flags, compile_report(fn, sig, const, values, warps, stages, f"{kind}_{bm}_{bn}_{warps}_{stages}"))
