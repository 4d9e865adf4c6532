"""Our Triton kernels compiled on a GPU, at full size and odd sizes, against attention_ref (2x PyTorch's error).

Skipped without CUDA. Run alone on a GPU machine: PYTHONPATH=. python -m pytest tests/gpu -q
"""
import pytest
import torch

from swaa.attention import attention_ref, swaa_attention
from tests.conftest import assert_close_to_ref, assert_grads_close_to_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA; GPU results are committed under benchmarks/results/")

FWD = [  # (lq, lk, hq, hkv, d, window, sinks)
    (8192, 8192, 32, 8, 128, 2048, 100), (4099, 4099, 32, 8, 128, 1, 0), (1023, 1023, 9, 3, 64, 16, 40),
    (4096, 4096, 12, 4, 128, None, 0), (1, 4099, 32, 8, 128, 2048, 100), (127, 8192, 9, 3, 64, 512, 4),
    (2000, 2000, 8, 8, 96, 100, 300), (333, 777, 8, 2, 256, 64, 1), (3000, 3000, 9, 3, 80, 4096, 10),
]


def _use_gluon(monkeypatch, kinds):
    """The Gluon kernels of ``kinds`` (fwd, dkdv, dq) wherever they can run (Hopper, head_dim 64/128), the others
    off: the tuning table as a test sets it."""
    from swaa.attention.triton import tuning
    table = {kind: ({(9, 0): (64, 128)} if kind in kinds else {}) for kind in ("fwd", "dkdv", "dq")}
    monkeypatch.setattr(tuning, "GLUON", table)


@pytest.fixture(params=["gluon", "triton-language"])
def fwd_kernel(request, monkeypatch):
    """Each forward test runs both forward kernels: the warp-specialised Gluon one (Hopper, head_dim 64/128; the
    test checks it ran) and the triton-language one."""
    _use_gluon(monkeypatch, {"fwd"} if request.param == "gluon" else set())
    return request.param


def _ran(kind):
    from swaa.attention.triton.autograd import LAST_KERNELS
    return LAST_KERNELS.get(kind)


def _gluon_applies(q, kind="fwd"):
    from swaa.attention.triton import gluon
    return gluon.why_not(kind, q, q.shape[-1]) is None and q.shape[-1] in (64, 128)


def _ran_gluon():
    return _ran("fwd") == "gluon"


@pytest.mark.parametrize("lq, lk, hq, hkv, d, w, s", FWD)
def test_forward_full_and_odd_sizes(lq, lk, hq, hkv, d, w, s, fwd_kernel):
    q = torch.randn(1, hq, lq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, lk, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, hkv, lk, d, device="cuda", dtype=torch.bfloat16)
    kw = dict(sliding_window_size=w, keep_first=s)
    with torch.no_grad():
        out, lse = swaa_attention(q, k, v, backend="triton", return_lse=True, **kw)
    if lq > 16:              # (Lq <= 16 without grad is the decode kernel's)
        assert _ran_gluon() == (fwd_kernel == "gluon" and _gluon_applies(q))
    ref, ref_lse = attention_ref(q, k, v, return_lse=True, **kw)
    assert_close_to_ref(out, ref, attention_ref(q, k, v, upcast=False, **kw))
    assert (lse - ref_lse).abs().max() < 2e-2


# the Gluon forward's own edge cases: its 128-row tiles of two 64-row halves, 128-key tiles, persistent rings
GLUON = [(1, 1, 4, 4, 128, 64, 4, 2), (65, 65, 6, 2, 128, 1, 1, 1), (129, 700, 6, 2, 64, 3, 200, 1),
         (2000, 2000, 8, 8, 128, 100, 300, 1), (513, 513, 8, 2, 128, 64, 10, 3), (300, 5000, 32, 8, 128, 2048, 100, 1),
         (4099, 4099, 32, 8, 128, None, 0, 1), (1000, 1000, 12, 4, 64, 4096, 0, 2)]


@pytest.mark.parametrize("lq, lk, hq, hkv, d, w, s, b", GLUON)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gluon_forward_edges(lq, lk, hq, hkv, d, w, s, b, dtype, monkeypatch):
    from swaa.attention.triton import gluon
    _use_gluon(monkeypatch, {"fwd"})
    q = torch.randn(b, hq, lq, d, device="cuda", dtype=dtype, requires_grad=True)
    if not _gluon_applies(q.detach()):
        pytest.skip(f"the Gluon forward does not run here: {gluon.why_not('fwd', q, d)}")
    k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype)
    v = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype)
    kw = dict(sliding_window_size=w, keep_first=s)
    out, lse = swaa_attention(q, k, v, backend="triton", return_lse=True, **kw)      # with grad: never decode
    assert _ran_gluon()
    ref, ref_lse = attention_ref(q.detach(), k, v, return_lse=True, **kw)
    assert_close_to_ref(out.detach(), ref, attention_ref(q.detach(), k, v, upcast=False, **kw))
    fin = torch.isfinite(ref_lse)
    assert (lse[fin] - ref_lse[fin]).abs().max() < 2e-2
    assert (lse[~fin] == float("-inf")).all()


BWD = [(2048, 2048, 32, 8, 128, 256, 100), (1023, 1023, 9, 3, 64, 1, 0), (777, 777, 12, 4, 128, 16, 40),
       (1500, 1500, 8, 8, 64, None, 0), (600, 1100, 6, 2, 128, 128, 4),
       # the dK/dV kernel's sink split with many chunks; sinks over five key blocks and larger than the window
       (4096, 4096, 9, 3, 64, 512, 100), (3000, 3000, 8, 2, 128, 64, 300)]


@pytest.fixture(params=["gluon", "gluon-dkdv", "triton-language"])
def dkdv_kernel(request, monkeypatch):
    """Each backward test runs the backward kernels three ways: the Gluon dQ and dK/dV kernels (Hopper, head_dim
    64/128; the test checks they ran), the Gluon dK/dV beside the triton-language dQ, and both triton-language."""
    kinds = {"gluon": {"dq", "dkdv"}, "gluon-dkdv": {"dkdv"}, "triton-language": set()}[request.param]
    _use_gluon(monkeypatch, kinds)
    return request.param


def _check_dkdv_kernel(kernel, q):
    gluon = _gluon_applies(q.detach(), "dkdv")
    assert (_ran("dkdv") == "gluon") == (kernel != "triton-language" and gluon)
    assert (_ran("dq") == "gluon") == (kernel == "gluon" and gluon)


@pytest.mark.parametrize("lq, lk, hq, hkv, d, w, s", BWD + [(1, 1, 4, 4, 128, 8, 2), (130, 130, 4, 2, 128, 64, 129)])
def test_backward(lq, lk, hq, hkv, d, w, s, dkdv_kernel):
    mk = lambda h, n: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq, lq), mk(hkv, lk), mk(hkv, lk)
    assert_grads_close_to_ref(q, k, v, torch.randn_like(q), floor=1e-3, sliding_window_size=w, keep_first=s)
    _check_dkdv_kernel(dkdv_kernel, q)


@pytest.mark.parametrize("one_pass", [None, True, False], ids=["default", "one-pass", "split"])
@pytest.mark.parametrize("n, w, s, lq", [(131072, None, 0, 1), (131072, 2048, 100, 1), (32768, 4096, 0, 1),
                                         (32768, 2048, 100, 4), (5000, 3000, 2500, 2)])
def test_decode_against_long_caches(n, w, s, lq, one_pass):
    from swaa.attention.triton import triton_decode
    q = torch.randn(2, 32, lq, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 8, n, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kw = dict(sliding_window_size=w, keep_first=s)
    with torch.no_grad():
        out = triton_decode(q, k, v, window=w, keep_first=s, one_pass=one_pass)
        auto = swaa_attention(q, k, v, **kw)
    ref, pt = attention_ref(q, k, v, **kw), attention_ref(q, k, v, upcast=False, **kw)
    assert_close_to_ref(out, ref, pt)
    assert_close_to_ref(auto, ref, pt)


def test_varlen_on_gpu(fwd_kernel):
    from swaa.attention.triton import swaa_attention_varlen
    lens = [1000, 37, 4096]
    cu = torch.tensor([0, 1000, 1037, 5133], dtype=torch.int32, device="cuda")
    q = torch.randn(5133, 12, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(5133, 4, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = swaa_attention_varlen(q, k, v, cu, cu, 4096, 4096, sliding_window_size=256, keep_first=8)
    assert _ran_gluon() == (fwd_kernel == "gluon" and _gluon_applies(q[None].transpose(1, 2)))
    for i, n in enumerate(lens):
        a, b = int(cu[i]), int(cu[i + 1])
        tr = lambda t: t[a:b].transpose(0, 1)[None]
        kw = dict(sliding_window_size=256, keep_first=8)
        ref = attention_ref(tr(q), tr(k), tr(v), **kw)[0].transpose(0, 1)
        pt = attention_ref(tr(q), tr(k), tr(v), upcast=False, **kw)[0].transpose(0, 1)
        assert_close_to_ref(out[a:b], ref, pt)


def test_varlen_backward_on_gpu(dkdv_kernel):
    """Packed sequences of other lengths than their neighbours, sinks split over programs in each."""
    from swaa.attention.triton import swaa_attention_varlen
    lens = [1000, 37, 4096]
    cu = torch.tensor([0, 1000, 1037, 5133], dtype=torch.int32, device="cuda")
    mk = lambda h: torch.randn(5133, h, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(12), mk(4), mk(4)
    kw = dict(sliding_window_size=256, keep_first=70)
    out = swaa_attention_varlen(q, k, v, cu, cu, 4096, 4096, **kw)
    do = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), do)
    _check_dkdv_kernel(dkdv_kernel, q[None].transpose(1, 2))
    for i, n in enumerate(lens):
        a, b = int(cu[i]), int(cu[i + 1])
        leaf = [t[a:b].detach().transpose(0, 1)[None].requires_grad_(True) for t in (q, k, v)]
        g = do[a:b].transpose(0, 1)[None]
        ref = torch.autograd.grad(attention_ref(*leaf, **kw), leaf, g)
        pt = torch.autograd.grad(attention_ref(*leaf, upcast=False, **kw), leaf, g)
        for name, x, r, p in zip(("dq", "dk", "dv"), got, ref, pt):
            assert_close_to_ref(x[a:b], r[0].transpose(0, 1), p[0].transpose(0, 1), floor=1e-3, name=f"{name}[{i}]")
