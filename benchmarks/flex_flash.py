"""FlexAttention on FlashAttention-4's CuTe-DSL kernels (``kernel_options={"BACKEND": "FLASH"}``) for our mask: the
block mask, a runner, the package versions and a preflight that says in one line why it cannot run.

Needs the ``flash-attn-4`` package and NVIDIA's CUTLASS DSL (``nvidia-cutlass-dsl`` with its ``-libs-core`` and
``-libs-cu13`` wheels), ``quack-kernels`` and ``apache-tvm-ffi``. torch reaches FA4 only through ``torch.compile``
(eager flex ignores the backend), and torch 2.11's CuTe code generation cannot load a captured 0-d tensor, so the
mask_mod here closes over W and S as Python ints (one compile per (W, S)).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
import typing

import torch
import torch.nn.functional as F

from swaa.attention.flex import _compiled, make_block_mask
from swaa.attention.masks import dense_mask, make_mask_mod

FLASH = {"BACKEND": "FLASH"}
_PACKAGES = ("torch", "flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-core",
             "nvidia-cutlass-dsl-libs-cu13", "quack-kernels", "apache-tvm-ffi", "cuda-bindings")
_IMPORTS = ("cutlass.cute", "torch._inductor.codegen.cutedsl._cutedsl_utils", "flash_attn.cute.interface",
            "flash_attn.cute.block_sparsity")


def block_mask(lq: int, lk: int, window, keep_first: int, device):
    """Our analytic BlockMask (128 x 128 tiles, partial and full lists) with a mask_mod over Python ints."""
    bm = make_block_mask(lq, lk, window, keep_first, device)
    return type(bm).from_kv_blocks(
        bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices, BLOCK_SIZE=bm.BLOCK_SIZE,
        mask_mod=make_mask_mod(window, keep_first, q_offset=lk - lq), seq_lengths=bm.seq_lengths)


def attention(q, k, v, bm):
    """One compiled flex_attention call on the FLASH backend; q (B, Hq, L, D), k/v (B, Hkv, L, D)."""
    return _compiled()(q, k, v, block_mask=bm, enable_gqa=q.shape[1] != k.shape[1], kernel_options=FLASH)


def runner(q, k, v, window, keep_first: int):
    bm = block_mask(q.shape[-2], k.shape[-2], window, keep_first, q.device)
    return lambda: attention(q, k, v, bm)


def versions() -> dict:
    """Versions of every package on the FLASH path, and the CuTe-DSL compiler flavour loaded."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    ir = sys.modules.get("cutlass._mlir._mlir_libs._cutlass_ir")
    out["cutlass_ir"] = getattr(ir, "__file__", None) and ir.__file__.rsplit("/", 1)[-1]
    return out


def _reason(stage: str, e: BaseException) -> str:
    """``stage: Type: first lines`` of the exception and of its root cause, on one line."""
    def text(x):
        lines = [ln.strip() for ln in str(x).splitlines() if ln.strip()]
        return f"{type(x).__name__}: {' | '.join(lines[:3])}"[:400]
    root = e
    for _ in range(16):
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    msg = f"{stage}: {text(e)}"
    return msg if root is e else f"{msg} <- {text(root)}"


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def why_not(hq: int = 32, hkv: int = 8, d: int = 128, window: int = 2048, keep_first: int = 100, n: int = 4096,
            tol: float = 2e-2) -> str | None:
    """None when FLASH runs our mask forward and backward and matches fp32 SDPA on the dense mask (relative L2
    error <= ``tol``), else a one-line reason. ``n`` must exceed W + S so that both edges appear."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    cap = torch.cuda.get_device_capability()
    if cap < (9, 0):
        return f"FLASH needs sm_90 or newer; this GPU is sm_{cap[0]}{cap[1]}"
    from torch.nn.attention import flex_attention as fa
    if "FLASH" not in typing.get_args(getattr(fa, "_Backend", typing.Literal["AUTO"])):
        return f"torch {torch.__version__} has no flex_attention BACKEND='FLASH'"
    try:
        for mod in _IMPORTS:
            importlib.import_module(mod)
    except Exception as e:
        return _reason("import", e)
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
               for h in (hq, hkv, hkv))
    do = torch.randn(1, hq, n, d, device=dev, dtype=torch.bfloat16, generator=g)
    try:
        out = attention(q, k, v, block_mask(n, n, window, keep_first, dev))
        grads = torch.autograd.grad(out, (q, k, v), do)
        torch.cuda.synchronize()
    except Exception as e:
        return _reason("FLASH fwd+bwd", e)
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, attn_mask=dense_mask(n, n, window, keep_first, device=dev),
                                         enable_gqa=hq != hkv)
    ref_grads = torch.autograd.grad(ref, ref_in, do.float())
    errs = {name: _rel(a, b) for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads))}
    if any(not e <= tol for e in errs.values()):                     # "not <=" also catches NaN
        return "FLASH differs from fp32 SDPA (relative L2): " + ", ".join(f"{k}={e:.2e}" for k, e in errs.items())
    return None
