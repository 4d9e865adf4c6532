"""GPU tier: backends on CUDA against attention_ref (forward and backward), and the model integration on CUDA.

Skipped without CUDA (CI has none). Run on a GPU machine: PYTHONPATH=. python -m pytest tests/gpu -q
"""
import itertools

import pytest
import torch

from swaa import SWAAConfig, apply_swaa
from swaa.attention import attention_ref, resolve_backend, swaa_attention
from tests.conftest import assert_close_to_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA; GPU results are committed under benchmarks/results/")

SHAPES = [(113, 113), (1023, 1023), (1, 4099), (127, 4099), (4096, 4096)]
GRID = [(lq, lk, w, s, g, d) for n, ((lq, lk), (w, s), g, d) in enumerate(itertools.product(
    SHAPES, [(1, 0), (16, 4), (256, 0), (100, 300), (None, 0)], [1, 4], [64, 128]))]


def _inputs(lq, lk, groups, d, dtype, grad=False, hkv=2):
    mk = lambda h, l: torch.randn(2, h, l, d, device="cuda", dtype=dtype, requires_grad=grad)
    return mk(hkv * groups, lq), mk(hkv, lk), mk(hkv, lk)


@pytest.mark.parametrize("backend", ["flex", "sdpa"])
@pytest.mark.parametrize("lq, lk, w, s, groups, d", GRID)
def test_forward_bf16(backend, lq, lk, w, s, groups, d):
    q, k, v = _inputs(lq, lk, groups, d, torch.bfloat16)
    kw = dict(sliding_window_size=w, keep_first=s)
    out = swaa_attention(q, k, v, backend=backend, **kw)
    assert_close_to_ref(out, attention_ref(q, k, v, **kw), attention_ref(q, k, v, **kw, upcast=False))


@pytest.mark.parametrize("backend", ["flex", "sdpa"])
@pytest.mark.parametrize("lq, lk, w, s, groups, d", [c for c in GRID if c[0] == c[1] and c[0] <= 1023])
def test_backward_bf16(backend, lq, lk, w, s, groups, d):
    q, k, v = _inputs(lq, lk, groups, d, torch.bfloat16, grad=True)
    g = torch.randn_like(q)
    kw = dict(sliding_window_size=w, keep_first=s)
    grads = lambda fn: torch.autograd.grad(fn(), (q, k, v), g)
    ref = grads(lambda: attention_ref(q, k, v, **kw))
    pt = grads(lambda: attention_ref(q, k, v, **kw, upcast=False))
    got = grads(lambda: swaa_attention(q, k, v, backend=backend, **kw))
    for name, a, r, p in zip(("dq", "dk", "dv"), got, ref, pt):
        assert_close_to_ref(a, r, p, floor=1e-3, name=name)


def test_flex_lse_on_cuda():
    q, k, v = _inputs(1023, 1023, 4, 128, torch.bfloat16)
    out, lse = swaa_attention(q, k, v, sliding_window_size=64, keep_first=4, backend="flex", return_lse=True)
    _, ref_lse = attention_ref(q, k, v, sliding_window_size=64, keep_first=4, return_lse=True)
    assert (lse - ref_lse).abs().max() < 2e-2


def test_auto_follows_the_benchmark_on_cuda():
    q, k, v = _inputs(256, 256, 1, 128, torch.bfloat16)
    assert resolve_backend("auto", q, k, v, window=128).name == "triton"     # inference with a window, head_dim 128
    q, k, v = _inputs(256, 256, 1, 64, torch.bfloat16)
    assert resolve_backend("auto", q, k, v, window=128).name == "flex"       # head_dim 64: Flex is ~10% faster
    assert resolve_backend("auto", q, k, v, window=None).name == "sdpa"      # fused causal kernel is faster
    qg, kg, vg = _inputs(256, 256, 1, 64, torch.bfloat16, grad=True)
    assert resolve_backend("auto", qg, kg, vg, window=128).name == "flex"    # short training at 64: flex ahead
    assert resolve_backend("auto", qg, kg, vg, window=128, keep_first=4).name == "flex"     # with sinks too
    qg, kg, vg = _inputs(16384, 16384, 1, 64, torch.bfloat16, grad=True)
    assert resolve_backend("auto", qg, kg, vg, window=128, keep_first=4).name == "triton"   # from 16k: ours
    qg, kg, vg = _inputs(256, 256, 1, 128, torch.bfloat16, grad=True)
    assert resolve_backend("auto", qg, kg, vg, window=128).name == "triton"  # head_dim 128, no sinks: ours 1.09x
    mask = torch.ones(2, 1, 256, 256, dtype=torch.bool, device="cuda").tril()
    assert resolve_backend("auto", q, k, v, window=128, mask=mask).name == "sdpa"
    # decode (docs/kernels.md, decode table): one query over one run of keys -> SDPA; sinks apart from the window ->
    # ours; full attention -> SDPA
    q1, k1, v1 = _inputs(1, 8192, 4, 128, torch.bfloat16)
    assert resolve_backend("auto", q1, k1, v1, window=None).name == "sdpa"
    qn, kn, vn = _inputs(1, 65536, 4, 128, torch.bfloat16)                    # 4 pairs, 64k keys: our split leads
    assert resolve_backend("auto", qn, kn, vn, window=None).name == "triton"
    qw, kw_, vw = _inputs(1, 65536, 4, 128, torch.bfloat16, hkv=8)           # 16 pairs: SDPA
    assert resolve_backend("auto", qw, kw_, vw, window=None).name == "sdpa"
    assert resolve_backend("auto", q1, k1, v1, window=2048).name == "sdpa"
    assert resolve_backend("auto", q1, k1, v1, window=2048, keep_first=100).name == "triton"
    assert resolve_backend("auto", q1, k1[:, :, :2100], v1[:, :, :2100], window=2048, keep_first=100).name == "sdpa"


@pytest.mark.parametrize("lq, lk, w, s, groups", [(4096, 4096, 2048, 100, 4), (1000, 1000, 64, 300, 2)])
def test_flex_on_flashattention4(lq, lk, w, s, groups):
    """Flex on FlashAttention-4's kernels where that package is installed, forward and backward, against the
    reference (2x PyTorch's error)."""
    from swaa.attention import available_backends
    why = available_backends()["flex-flash"]
    if why:
        pytest.skip(f"flex-flash: {why}")
    q, k, v = _inputs(lq, lk, groups, 128, torch.bfloat16, grad=True)
    kw = dict(sliding_window_size=w, keep_first=s)
    g = torch.randn_like(q)
    grads = lambda fn: (fn(), *torch.autograd.grad(fn(), (q, k, v), g))
    got = grads(lambda: swaa_attention(q, k, v, backend="flex-flash", **kw))
    ref = grads(lambda: attention_ref(q, k, v, **kw))
    pt = grads(lambda: attention_ref(q, k, v, **kw, upcast=False))
    for name, a, r, p in zip(("out", "dq", "dk", "dv"), got, ref, pt):
        assert_close_to_ref(a.detach(), r.detach(), p.detach(), floor=1e-3, name=name)
    big = torch.randn(1, 32, 32768, 128, device="cuda", dtype=torch.bfloat16)
    assert resolve_backend("auto", big, big[:, :8], big[:, :8], window=2048, keep_first=100).name == "flex-flash"


def test_tiny_model_on_cuda_matches_independent_dense():
    from tests.integration.tiny_models import make_model, with_independent
    cfg = SWAAConfig(sliding_window_size=6, keep_first=2, non_sliding_layers=[1])
    ids = torch.randint(3, 90, (2, 200), device="cuda")
    m = apply_swaa(make_model("qwen3").cuda().to(torch.bfloat16), cfg)
    ref = with_independent(make_model("qwen3").cuda().to(torch.bfloat16), cfg)
    with torch.no_grad():
        a, b = m(ids).logits.float(), ref(ids).logits.float()
    assert (a - b).abs().max() < 0.1 * b.abs().max()
    m.train()
    out = m(ids, labels=ids)
    out.loss.backward()                                   # flex backward through the model on CUDA
    assert torch.isfinite(m.model.layers[0].self_attn.q_proj.weight.grad).all()
