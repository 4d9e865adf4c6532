"""The Gluon kernels (swaa/attention/triton/_fwd_gluon.py, _bwd_gluon.py, _dq_gluon.py) on a machine without a
GPU: they compile for Hopper (sm_90a) with the installed Triton, as warp-specialised partitions within the card's
shared memory, the wrappers pass exactly their parameters, and say why they will not run here. Their numerics run
on a GPU (tests/gpu/test_triton_gpu.py)."""
import importlib

import pytest
import torch

T = pytest.importorskip("swaa.attention.triton")
if T._GLUON_ERROR:
    pytest.skip(f"no Gluon here: {T._GLUON_ERROR}", allow_module_level=True)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

H100_SMEM = 232448          # bytes of shared memory a CTA may use on sm_90


def _compile(**kw):
    """tests/unit/_gluon_compile.py in a process without the interpreter (which the unit tier runs under)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "tests.unit._gluon_compile", json.dumps(kw)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("d, block_n, k_stages, v_stages, varlen, pingpong", [
    (128, 128, 3, 3, False, False), (128, 128, 3, 3, True, False), (64, 128, 2, 2, False, True)])
def test_gluon_forward_compiles_for_hopper(d, block_n, k_stages, v_stages, varlen, pingpong):
    k = _compile(d=d, block_n=block_n, k_stages=k_stages, v_stages=v_stages, varlen=varlen, pingpong=pingpong)
    ttgir = k["ttgir"]
    assert "ttg.warp_specialize" in ttgir
    # consumer 1, the K and V loaders and the Q loader, with their register budgets
    assert "partition3" in ttgir and "partition4" not in ttgir
    assert "requestedRegisters = array<i32: 240, 24, 24, 24>" in ttgir
    assert ttgir.count("ttng.warp_group_dot") >= 3      # Q K^T (tile 0 and the loop), P V (loop and last)
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


def test_default_config_fits_the_card():
    bn, ks, vs, *_ = T._GLUON_CFG
    assert _compile(d=128, block_n=bn, k_stages=ks, v_stages=vs)["shared"] <= H100_SMEM


def test_wrapper_names_why_it_does_not_run_here():
    q = torch.zeros(1, 2, 8, 128, dtype=torch.bfloat16)
    geo = T._Geometry(q, q)
    why = T._gluon_why_not(q, geo)
    assert why is not None and ("CUDA" in why or "interpreter" in why)
    assert T._gluon_auto(geo) is True                      # head_dim 128: the Gluon forward on a Hopper GPU
    assert T._gluon_auto(T._Geometry(q[..., :64], q[..., :64])) is False


def _capture(monkeypatch, kernel):
    """Replace the wrapper's ``kernel`` by a stand-in that records its launch: {grid, args, kw}."""
    seen = {}

    class _Launch:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.update(grid=grid, args=args, kw=kw)
            return launch

    monkeypatch.setattr(T, kernel, _Launch())
    return seen


@pytest.mark.parametrize("which", ["forward", "dkdv", "dq"])
def test_a_gluon_kernel_that_does_not_compile_falls_back_with_a_warning(monkeypatch, which):
    """A Triton whose Gluon API has moved on: the first launch's CompilationError turns the Gluon kernels off (with a
    warning that says why) and the call completes on the triton-language kernels, with exactly their results."""
    class _Broken:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                raise T.triton.CompilationError(None, None, "moved on")
            return launch

    mk = lambda h: torch.randn(1, h, 70, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    do = torch.randn_like(q)
    geo = T._Geometry(q, k)

    def run():
        o, lse = T._forward(q, k, v, geo, 16, 4, 0.1)
        return (o, *T._backward(do, q, k, v, o, lse, geo, 16, 4, 0.1))

    monkeypatch.setattr(T, "_GLUON_FWD", False)
    monkeypatch.setattr(T, "_GLUON_BWD", False)
    expect = run()                                                  # the triton-language kernels alone
    monkeypatch.setattr(T, "_GLUON_ERROR", None)
    monkeypatch.setattr(T, "_gluon_why_not", lambda q, geo: T._GLUON_ERROR)    # as on a Hopper GPU, until disabled
    monkeypatch.setattr(T, "_sm_count", lambda device: 132)
    monkeypatch.setattr(T, "_GLUON_FWD", which == "forward")
    monkeypatch.setattr(T, "_GLUON_BWD", which == "dkdv")
    monkeypatch.setattr(T, "_GLUON_DQK", which == "dq")
    monkeypatch.setattr(T, "_GLUON_DQK_ERROR", None)
    kernel = {"forward": "_fwd_gluon_kernel", "dkdv": "_bwd_dkdv_gluon_kernel", "dq": "_bwd_dq_gluon_kernel"}[which]
    monkeypatch.setattr(T, kernel, _Broken())
    name = {"forward": "forward", "dkdv": "dK/dV", "dq": "dQ"}[which]
    with pytest.warns(RuntimeWarning, match=f"Gluon {name} does not compile"):
        got = run()
    # a broken dQ turns off only itself: the other Gluon kernels keep running where they can
    assert "moved on" in ((T._GLUON_DQK_ERROR or "") if which == "dq" else T._GLUON_ERROR)
    assert (T._GLUON_ERROR is None) == (which == "dq") and not T.LAST_BWD_GLUON and not T.LAST_DQ_GLUON
    for g, e in zip(got, expect):
        assert torch.equal(g, e)


def test_wrapper_launch_matches_the_kernel(monkeypatch):
    """The wrapper's launch passes exactly the kernel's parameters (a mismatch only shows on a GPU otherwise)."""
    seen = _capture(monkeypatch, "_fwd_gluon_kernel")
    monkeypatch.setattr(T, "_sm_count", lambda device: 132)
    q = torch.zeros(1, 8, 300, 128, dtype=torch.bfloat16)
    k = torch.zeros(1, 2, 300, 128, dtype=torch.bfloat16)
    geo = T._Geometry(q, k)
    o, lse = torch.empty_like(q), torch.empty(geo.lse_shape)
    assert T._forward_gluon(q, k, k, o, lse, geo, 64, 4, 0.1)
    kernel = importlib.import_module("swaa.attention.triton._fwd_gluon")._fwd_gluon_kernel
    names = kernel.arg_names
    run_time = {"num_warps", "maxnreg"}
    assert set(seen["kw"]) - run_time <= set(names), set(seen["kw"]) - run_time - set(names)
    assert len(seen["args"]) + len(set(seen["kw"]) - run_time) == len(names)
    assert seen["grid"] == (min(132, 3 * 4 * 2),)                # 3 tiles of 128 rows x 4 query heads x 2 KV heads


@pytest.mark.parametrize("d, varlen, fused_dq, dq_vec", [(128, False, False, 1), (64, True, False, 1),
                                                         (128, True, True, 1), (128, False, True, 2),
                                                         (128, False, True, 4)])
def test_gluon_dkdv_compiles_for_hopper(d, varlen, fused_dq, dq_vec):
    k = _compile(d=d, block_n=T._GLUON_KEY_ROWS, varlen=varlen, bwd=True, fused_dq=fused_dq, dq_vec=dq_vec)
    ttgir, ptx = k["ttgir"], k["ptx"]
    assert "ttg.warp_specialize" in ttgir and "requestedRegisters = array<i32: 240, 24>" in ttgir
    # S^T, dP^T, dV, dK in each consumer (and dQ with its reductions when fused)
    assert ttgir.count("ttng.warp_group_dot ") >= (10 if fused_dq else 8)
    assert ("tt.atomic_rmw" in ttgir) == (fused_dq and dq_vec == 1)
    for vec in (2, 4):
        assert (f"red.relaxed.gpu.global.add.v{vec}.f32" in ptx) == (fused_dq and dq_vec == vec)
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


@pytest.mark.parametrize("fused_dq", [False, True])
def test_backward_wrapper_launches_the_gluon_dkdv_with_its_parameters(monkeypatch, fused_dq):
    """With SWAA_TRITON_GLUON_BWD the backward hands the Gluon dK/dV kernel exactly its parameters and a grid over
    128-key blocks plus the sink chunks (the other kernels run under the interpreter as usual)."""
    seen = _capture(monkeypatch, "_bwd_dkdv_gluon_kernel")
    monkeypatch.setattr(T, "_GLUON_BWD", True)
    monkeypatch.setattr(T, "_GLUON_DQ", fused_dq)
    monkeypatch.setattr(T, "_GLUON_FWD", False)                  # the forward: the triton-language kernel here
    monkeypatch.setattr(T, "_gluon_why_not", lambda q, geo: None)
    mk = lambda h: torch.randn(1, h, 300, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    geo = T._Geometry(q, k)
    o, lse = T._forward(q, k, v, geo, 64, 4, 0.1)
    dq, _, _ = T._backward(torch.randn_like(o), q, k, v, o, lse, geo, 64, 4, 0.1)
    dq_arg = seen["args"][len(seen["args"]) - 1]                 # DQ: the fp32 accumulator, or dq unused
    assert dq_arg.dtype == (torch.float32 if fused_dq else q.dtype) and dq_arg.stride() == q.stride()
    assert seen["kw"]["FUSED_DQ"] == fused_dq and dq.dtype == q.dtype and dq.stride() == q.stride()
    assert seen["kw"]["DQ_VEC"] == (T._GLUON_DQ_VEC if fused_dq else 1)
    kernel = importlib.import_module("swaa.attention.triton._bwd_gluon")._bwd_dkdv_gluon_kernel
    names = kernel.arg_names
    kw = set(seen["kw"]) - {"num_warps", "maxnreg"}
    assert kw <= set(names) and len(seen["args"]) + len(kw) == len(names), kw - set(names)
    nsb, chunk, parts = T._sink_split(geo, 64, 4, 64, T._GLUON_KEY_ROWS)
    assert seen["grid"] == (3 + nsb * (parts - 1), 2)          # 3 blocks of 128 keys, plus the sink chunks


@pytest.mark.parametrize("d, block_n, stages, varlen, preamble", [
    (128, 64, 3, False, True), (128, 64, 3, True, True), (128, 64, 4, False, False), (64, 64, 3, True, True),
    (128, 128, 2, False, True)])
def test_gluon_dq_compiles_for_hopper(d, block_n, stages, varlen, preamble):
    k = _compile(d=d, block_n=block_n, k_stages=stages, v_stages=stages, varlen=varlen, dq=True, preamble=preamble)
    ttgir = k["ttgir"]
    assert "ttg.warp_specialize" in ttgir and "requestedRegisters = array<i32: 240, 24, 24, 24>" in ttgir
    # per consumer: S and dP of key tile 0, S, dQ and dP in the loop, the last dQ
    assert ttgir.count("ttng.warp_group_dot ") >= 12
    # the preamble's delta and backward LSE stores, or the loads of both
    assert ttgir.count("tt.store") >= (4 if preamble else 2)
    assert 0 < k["shared"] <= H100_SMEM, k["shared"]


def test_default_gluon_dq_config_fits_the_card():
    bn, ks, vs = T._GLUON_DQK_CFG
    assert _compile(d=128, block_n=bn, k_stages=ks, v_stages=vs, dq=True)["shared"] <= H100_SMEM


@pytest.mark.filterwarnings("ignore::RuntimeWarning")       # dK/dV reads the delta the stand-in never wrote
@pytest.mark.parametrize("preamble", [True, False])
def test_backward_wrapper_launches_the_gluon_dq_with_its_parameters(monkeypatch, preamble):
    """With SWAA_TRITON_GLUON_DQK the backward hands the Gluon dQ kernel exactly its parameters, a persistent grid
    and the forward's LSE (with the preamble, which then writes delta and the backward LSE) or the backward LSE."""
    seen = _capture(monkeypatch, "_bwd_dq_gluon_kernel")
    monkeypatch.setattr(T, "_GLUON_DQK", True)
    monkeypatch.setattr(T, "_GLUON_DQK_ERROR", None)
    monkeypatch.setattr(T, "_DQ_PREAMBLE", preamble)
    monkeypatch.setattr(T, "_GLUON_BWD", False)                  # dK/dV: the triton-language kernel here
    monkeypatch.setattr(T, "_GLUON_FWD", False)
    monkeypatch.setattr(T, "_gluon_why_not", lambda q, geo: None)
    monkeypatch.setattr(T, "_sm_count", lambda device: 132)
    mk = lambda h: torch.randn(1, h, 300, 128, dtype=torch.bfloat16)
    q, k, v = mk(4), mk(2), mk(2)
    geo = T._Geometry(q, k)
    o, lse = T._forward(q, k, v, geo, 64, 4, 0.1)
    dq, _, _ = T._backward(torch.randn_like(o), q, k, v, o, lse, geo, 64, 4, 0.1)
    assert T.LAST_DQ_GLUON
    kernel = importlib.import_module("swaa.attention.triton._dq_gluon")._bwd_dq_gluon_kernel
    names = kernel.arg_names
    kw = set(seen["kw"]) - {"num_warps", "maxnreg"}
    assert kw <= set(names) and len(seen["args"]) + len(kw) == len(names), kw - set(names)
    args = dict(zip(names, seen["args"]))
    assert seen["grid"] == (3 * 4,)                          # 3 tiles of 128 rows x 4 query heads (< 132 SMs)
    assert args["n_tiles"] == 12 and args["n_mg"] == 3 * 2 and args["DQ"] is dq
    assert (args["LSE"] is lse) == preamble and (args["LSE"] is args["LSE_B"]) != preamble
    assert seen["kw"]["PREAMBLE"] == preamble and seen["kw"]["BLOCK_N"] == T._GLUON_DQK_CFG[0]
    for a in ("q_desc", "k_desc", "v_desc", "do_desc"):
        assert isinstance(args[a], T._GluonDescriptor), a
    assert args["q_desc"].block_shape == [T._GLUON_WG_ROWS, 128]
    assert args["k_desc"].block_shape == [T._GLUON_DQK_CFG[0], 128]


@pytest.mark.parametrize("cfg", ["96,3,3", "64,1,3", "64,3"])
def test_a_bad_gluon_dq_config_is_named_at_import(cfg):
    env = dict(os.environ, SWAA_TRITON_GLUON_DQK_CFG=cfg)
    r = subprocess.run([sys.executable, "-c", "import swaa.attention.triton"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and f"SWAA_TRITON_GLUON_DQK_CFG={cfg}:" in r.stderr and "K_STAGES >= 2" in r.stderr
