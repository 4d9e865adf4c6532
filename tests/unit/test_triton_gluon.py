"""The Gluon kernels (swaa/attention/triton/_fwd_gluon.py, _bwd_gluon.py, _dq_gluon.py) on a machine without a
GPU: they compile for Hopper (sm_90a) with the installed Triton, as warp-specialised partitions within the card's
shared memory, the wrappers pass exactly their parameters, and say why they will not run here. Their numerics run
on a GPU (tests/gpu/test_triton_gpu.py)."""
import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from swaa.attention.triton import autograd, gluon, tuning  # noqa: E402
from swaa.attention.triton.layout import Geometry  # noqa: E402

if gluon.GLUON_ERROR:
    pytest.skip(f"no Gluon here: {gluon.GLUON_ERROR}", allow_module_level=True)

H100_SMEM = 232448          # bytes of shared memory a CTA may use on sm_90


def _compile(**kw):
    """tests/unit/_gluon_compile.py in a process without the interpreter (which the unit tier runs under)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "tests.unit._gluon_compile", json.dumps(kw)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("d, varlen", [(128, False), (128, True), (64, False)])
def test_gluon_forward_compiles_for_hopper(d, varlen):
    k = _compile(kind="fwd", d=d, varlen=varlen)
    ttgir = k["ttgir"]
    assert "ttg.warp_specialize" in ttgir
    # consumer 1, the K and V loaders and the Q loader, with their register budgets
    assert "partition3" in ttgir and "partition4" not in ttgir
    assert "requestedRegisters = array<i32: 240, 24, 24, 24>" in ttgir
    assert ttgir.count("ttng.warp_group_dot") >= 3      # Q K^T (tile 0 and the loop), P V (loop and last)
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


@pytest.mark.parametrize("d, varlen", [(128, False), (64, True)])
def test_gluon_dkdv_compiles_for_hopper(d, varlen):
    k = _compile(kind="dkdv", d=d, varlen=varlen)
    ttgir = k["ttgir"]
    assert "ttg.warp_specialize" in ttgir and "requestedRegisters = array<i32: 240, 24>" in ttgir
    assert ttgir.count("ttng.warp_group_dot ") >= 8          # S^T, dP^T, dV, dK in each consumer
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


@pytest.mark.parametrize("d, varlen, cfg", [(128, False, {}), (128, True, {}), (64, True, {}),
                                            (128, False, {"BLOCK_N": 128, "K_STAGES": 2, "V_STAGES": 2})])
def test_gluon_dq_compiles_for_hopper(d, varlen, cfg):
    k = _compile(kind="dq", d=d, varlen=varlen, **cfg)
    ttgir = k["ttgir"]
    assert "ttg.warp_specialize" in ttgir and "requestedRegisters = array<i32: 240, 24, 24, 24>" in ttgir
    # per consumer: S and dP of key tile 0, S, dQ and dP in the loop, the last dQ
    assert ttgir.count("ttng.warp_group_dot ") >= 12
    assert ttgir.count("tt.store") >= 4                     # the row statistics (delta, backward LSE) and dQ
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


def test_wrapper_names_why_it_does_not_run_here():
    q = torch.zeros(1, 2, 8, 128, dtype=torch.bfloat16)
    for kind in ("fwd", "dkdv", "dq"):
        why = gluon.why_not(kind, q, 128)
        assert why is not None and ("CUDA" in why or "interpreter" in why)
    assert tuning.gluon_runs("fwd", (9, 0), 128) and not tuning.gluon_runs("fwd", (9, 0), 64)
    assert tuning.gluon_runs("dkdv", (9, 0), 64) and not tuning.gluon_runs("dkdv", (8, 0), 128)


def _capture(monkeypatch, kernel):
    """Replace ``kernel`` (a name in the gluon module) by a stand-in that records its launch: {grid, args, kw}."""
    seen = {}

    class _Launch:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.update(grid=grid, args=args, kw=kw)
            return launch

    monkeypatch.setattr(gluon, kernel, _Launch())
    return seen


def _as_on_hopper(monkeypatch, kinds):
    """The Gluon kernels of ``kinds`` run (as on an H200, until disabled), the others do not."""
    monkeypatch.setattr(gluon, "GLUON_ERROR", None)
    monkeypatch.setattr(gluon, "why_not", lambda kind, q, d: gluon.GLUON_ERROR or (None if kind in kinds else "off"))
    monkeypatch.setattr(gluon, "sm_count", lambda device: 132)


def _signature_matches(seen, kernel_name, module):
    names = importlib.import_module(f"swaa.attention.triton.{module}").__dict__[kernel_name].arg_names
    kw = set(seen["kw"]) - {"num_warps", "maxnreg"}
    assert kw <= set(names) and len(seen["args"]) + len(kw) == len(names), kw - set(names)
    return dict(zip(names, seen["args"]))


@pytest.mark.parametrize("which", ["fwd", "dkdv", "dq"])
def test_a_gluon_kernel_that_does_not_compile_falls_back_with_a_warning(monkeypatch, which):
    """A Triton whose Gluon API has moved on: the first launch's CompilationError turns the Gluon kernels off (with a
    warning that says why) and the call completes on the triton-language kernels, with exactly their results."""
    class _Broken:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                raise autograd.triton.CompilationError(None, None, "moved on")
            return launch

    mk = lambda h: torch.randn(1, h, 70, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    do = torch.randn_like(q)
    geo = Geometry(q, k)

    def run():
        o, lse = autograd.forward(q, k, v, geo, 16, 4, 0.1)
        return (o, *autograd.backward(do, q, k, v, o, lse, geo, 16, 4, 0.1))

    expect = run()                                                  # the triton-language kernels alone
    _as_on_hopper(monkeypatch, {which})
    kernel = {"fwd": "_fwd_gluon_kernel", "dkdv": "_bwd_dkdv_gluon_kernel", "dq": "_bwd_dq_gluon_kernel"}[which]
    monkeypatch.setattr(gluon, kernel, _Broken())
    name = {"fwd": "forward", "dkdv": "dK/dV", "dq": "dQ"}[which]
    with pytest.warns(RuntimeWarning, match=f"Gluon {name} does not compile"):
        got = run()
    assert "moved on" in gluon.GLUON_ERROR
    assert set(autograd.LAST_KERNELS.values()) == {"triton"}
    for g, e in zip(got, expect):
        assert torch.equal(g, e)


def test_forward_launch_matches_the_kernel(monkeypatch):
    """The wrapper's launch passes exactly the kernel's parameters (a mismatch only shows on a GPU otherwise)."""
    seen = _capture(monkeypatch, "_fwd_gluon_kernel")
    _as_on_hopper(monkeypatch, {"fwd"})
    q = torch.zeros(1, 8, 300, 128, dtype=torch.bfloat16)
    k = torch.zeros(1, 2, 300, 128, dtype=torch.bfloat16)
    o, lse = autograd.forward(q, k, k, Geometry(q, k), 64, 4, 0.1)
    assert autograd.LAST_KERNELS["fwd"] == "gluon"
    args = _signature_matches(seen, "_fwd_gluon_kernel", "_fwd_gluon")
    assert args["O"] is o and args["LSE"] is lse
    assert seen["grid"] == (min(132, 3 * 4 * 2),)                # 3 tiles of 128 rows x 4 query heads x 2 KV heads


def test_backward_launches_the_gluon_dkdv_with_its_parameters(monkeypatch):
    """The backward hands the Gluon dK/dV kernel exactly its parameters and a grid over 128-key blocks plus the sink
    chunks (the other kernels run under the interpreter as usual)."""
    seen = _capture(monkeypatch, "_bwd_dkdv_gluon_kernel")
    _as_on_hopper(monkeypatch, {"dkdv"})
    mk = lambda h: torch.randn(1, h, 300, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    geo = Geometry(q, k)
    o, lse = autograd.forward(q, k, v, geo, 64, 4, 0.1)
    dq, dk, dv = autograd.backward(torch.randn_like(o), q, k, v, o, lse, geo, 64, 4, 0.1)
    args = _signature_matches(seen, "_bwd_dkdv_gluon_kernel", "_bwd_gluon")
    assert args["DK"] is dk and args["DV"] is dv and autograd.LAST_KERNELS["dkdv"] == "gluon"
    nsb, chunk, parts = autograd.sink_split(geo, 64, 4, 64, tuning.GLUON_DKDV["BLOCK_N"])
    assert seen["grid"] == (3 + nsb * (parts - 1), 2)          # 3 blocks of 128 keys, plus the sink chunks


@pytest.mark.filterwarnings("ignore::RuntimeWarning")       # dK/dV reads the delta the stand-in never wrote
def test_backward_launches_the_gluon_dq_with_its_parameters(monkeypatch):
    """The backward hands the Gluon dQ kernel exactly its parameters, a persistent grid and the forward's LSE (it
    writes delta and the backward LSE for the dK/dV kernel after it)."""
    seen = _capture(monkeypatch, "_bwd_dq_gluon_kernel")
    _as_on_hopper(monkeypatch, {"dq"})
    mk = lambda h: torch.randn(1, h, 300, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    geo = Geometry(q, k)
    o, lse = autograd.forward(q, k, v, geo, 64, 4, 0.1)
    dq, _, _ = autograd.backward(torch.randn_like(o), q, k, v, o, lse, geo, 64, 4, 0.1)
    assert autograd.LAST_KERNELS["dq"] == "gluon"
    args = _signature_matches(seen, "_bwd_dq_gluon_kernel", "_dq_gluon")
    assert seen["grid"] == (3 * 4,)                          # 3 tiles of 128 rows x 4 query heads (< 132 SMs)
    assert args["n_tiles"] == 12 and args["n_mg"] == 3 * 2 and args["DQ"] is dq and args["LSE"] is lse
    for a in ("q_desc", "k_desc", "v_desc", "do_desc"):
        assert isinstance(args[a], gluon.GluonDescriptor), a
    assert args["q_desc"].block_shape == [gluon.WG_ROWS, 128]
    assert args["k_desc"].block_shape == [tuning.GLUON_DQ["BLOCK_N"], 128]
