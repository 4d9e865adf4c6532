"""Every CPU backend against attention_ref over a grid that hunts edge cases.

Odd lengths, Lq < Lk (decode, chunks) and Lq > Lk (queries that see nothing), window 1 / 16 / longer than the
sequence / None, sinks 0 / 1 / 4 / larger than the window, GQA ratios 1 / 3 / 4, fp32 and bf16. A backend passes
when its error is at most twice PyTorch's own low-precision error (flash-attention's criterion).
"""
import itertools

import pytest
import torch

from swaa.attention import (attention_ref, available_backends, backend_names, merge_attention, swaa_attention,
                            use_backend)
from tests.conftest import assert_close_to_ref

# (1, 20), (2, 21): decode where the sinks reach the window (S >= Lk - W > 0)
SHAPES = [(1, 1), (17, 17), (113, 113), (203, 203), (1023, 1023), (1, 339), (113, 203), (203, 113), (1, 20), (2, 21)]
WINDOWS = [1, 16, 2048, None]
SINKS = [0, 1, 4, 20]
GQA = [1, 3, 4]
CASES = [(lq, lk, w, s, GQA[n % 3]) for n, ((lq, lk), w, s) in enumerate(itertools.product(SHAPES, WINDOWS, SINKS))
         if not (w is None and s)]                   # sinks mean nothing under full attention


def _inputs(lq, lk, groups, dtype, d=32, hkv=2, b=2, grad=False):
    q = torch.randn(b, hkv * groups, lq, d, dtype=dtype, requires_grad=grad)
    k = torch.randn(b, hkv, lk, d, dtype=dtype, requires_grad=grad)
    v = torch.randn(b, hkv, lk, d, dtype=dtype, requires_grad=grad)
    return q, k, v


def _check_forward(backend, lq, lk, w, s, groups, dtype, lse=False):
    d = 64 if lk < 500 else 32
    q, k, v = _inputs(lq, lk, groups, dtype, d=d, hkv=1 if lk > 500 else 2)
    kw = dict(sliding_window_size=w, keep_first=s)
    ref, ref_lse = attention_ref(q, k, v, **kw, return_lse=True)
    pt = attention_ref(q, k, v, **kw, upcast=False)
    res = swaa_attention(q, k, v, **kw, backend=backend, return_lse=lse)
    out = res[0] if lse else res
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert_close_to_ref(out, ref, pt)
    if lse:
        got = res[1]
        assert torch.equal(torch.isinf(got), torch.isinf(ref_lse))       # rows that see nothing: -inf
        fin = torch.isfinite(ref_lse)
        assert (got[fin] - ref_lse[fin]).abs().max().item() <= (2e-2 if dtype == torch.bfloat16 else 1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, groups", CASES)
def test_sdpa_forward(lq, lk, w, s, groups, dtype):
    _check_forward("sdpa", lq, lk, w, s, groups, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, groups", CASES)
def test_flex_forward_and_lse(lq, lk, w, s, groups, dtype):
    _check_forward("flex", lq, lk, w, s, groups, dtype, lse=True)


BWD = [c for c in CASES if c[1] <= 339]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, groups", BWD[::2])
def test_sdpa_backward(lq, lk, w, s, groups, dtype):
    q, k, v = _inputs(lq, lk, groups, dtype, grad=True)
    g = torch.randn(q.shape, dtype=dtype)
    kw = dict(sliding_window_size=w, keep_first=s)

    def grads(fn):
        out = fn()
        return torch.autograd.grad(out, (q, k, v), g)

    ref = grads(lambda: attention_ref(q, k, v, **kw))
    pt = grads(lambda: attention_ref(q, k, v, **kw, upcast=False))
    got = grads(lambda: swaa_attention(q, k, v, **kw, backend="sdpa"))
    for name, a, r, p in zip(("dq", "dk", "dv"), got, ref, pt):
        assert torch.isfinite(a).all()
        assert_close_to_ref(a, r, p, floor=1e-4, name=name)


def test_reference_low_precision_is_really_low_precision():
    # the tolerance above is only meaningful if upcast=False really computes in bf16
    q, k, v = _inputs(64, 64, 1, torch.bfloat16)
    err = (attention_ref(q, k, v, sliding_window_size=8, upcast=False).float()
           - attention_ref(q, k, v, sliding_window_size=8).float()).abs().max()
    assert 1e-4 < err < 0.1


def test_merge_of_disjoint_key_sets_equals_attention_over_their_union():
    """Sinks and window as two disjoint key sets, merged by LSE, equal the SWAA attention."""
    w, s, lq = 8, 4, 40
    q, k, v = _inputs(lq, lq, 2, torch.float32)
    full, full_lse = attention_ref(q, k, v, sliding_window_size=w, keep_first=s, return_lse=True)
    win, win_lse = attention_ref(q, k, v, sliding_window_size=w, return_lse=True)
    # the sink part: keys < s that the window does not already cover
    base = torch.ones(1, 1, lq, lq, dtype=torch.bool).tril()
    i = torch.arange(lq).view(-1, 1)
    j = torch.arange(lq).view(1, -1)
    sink_only = base & (j < s) & (i - j >= w)
    sq, sq_lse = attention_ref(q, k, v, mask=sink_only, sliding_window_size=None, return_lse=True)
    out, lse = merge_attention(win, win_lse, sq, sq_lse)
    torch.testing.assert_close(out, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, full_lse, atol=1e-5, rtol=1e-5)
    # a part that saw nothing is neutral, both empty stays zero
    empty = torch.full_like(win_lse, float("-inf"))
    out2, lse2 = merge_attention(win, win_lse, torch.zeros_like(win), empty)
    torch.testing.assert_close(out2, win) and torch.testing.assert_close(lse2, win_lse)
    out3, lse3 = merge_attention(torch.zeros_like(win), empty, torch.zeros_like(win), empty)
    assert (out3 == 0).all() and torch.isneginf(lse3).all()


def test_padding_mask_gives_each_row_its_own_sinks():
    """A left-padded row with a base mask equals the same row computed alone without padding."""
    w, s, n, pad = 5, 2, 30, 7
    q, k, v = _inputs(n, n, 3, torch.float32, b=1)
    alone = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="sdpa")
    qp, kp, vp = (torch.cat([torch.randn(1, t.shape[1], pad, t.shape[-1]), t], dim=2) for t in (q, k, v))
    base = torch.ones(1, 1, n + pad, n + pad, dtype=torch.bool).tril()
    base[..., :pad] = False
    for backend in ("sdpa", "reference"):
        out = swaa_attention(qp, kp, vp, sliding_window_size=w, keep_first=s, mask=base, backend=backend)
        torch.testing.assert_close(out[:, :, pad:], alone, atol=1e-5, rtol=1e-5)
        assert (out[:, :, :pad] == 0).all()             # padded queries see nothing


def test_auto_on_cpu_and_override():
    q, k, v = _inputs(20, 20, 1, torch.float32)
    assert available_backends()["sdpa"] is None and available_backends()["reference"] is None
    ref = attention_ref(q, k, v, sliding_window_size=4)
    for name in ("sdpa", "reference", "flex"):
        with use_backend(name):
            torch.testing.assert_close(swaa_attention(q, k, v, sliding_window_size=4), ref)
    # auto with return_lse on CPU falls back to a backend that gives it
    out, lse = swaa_attention(q, k, v, sliding_window_size=4, return_lse=True)
    torch.testing.assert_close(out, ref)


def test_unknown_unavailable_and_unsupported_backends_say_why():
    q, k, v = _inputs(8, 8, 1, torch.float32)
    with pytest.raises(ValueError, match=r"unknown attention backend 'tpu'.*'sdpa'"):
        swaa_attention(q, k, v, backend="tpu")
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        with use_backend("nope"):
            pass
    assert "flash" in backend_names()
    with pytest.raises(RuntimeError, match=r"backend 'flash' cannot run these inputs: flash_attn is not installed"):
        swaa_attention(q, k, v, backend="flash")
    with pytest.raises(RuntimeError, match="'sdpa' cannot run these inputs: torch SDPA does not return"):
        swaa_attention(q, k, v, backend="sdpa", return_lse=True)
    qg = q.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="FlexAttention has no backward on CPU"):
        swaa_attention(qg, k, v, backend="flex")


@pytest.mark.parametrize("kw, needle", [
    (dict(sliding_window_size=0), "sliding_window_size=0"),
    (dict(keep_first=-1), "keep_first=-1"),
])
def test_bad_window_arguments(kw, needle):
    q, k, v = _inputs(8, 8, 1, torch.float32)
    with pytest.raises(ValueError, match=needle):
        swaa_attention(q, k, v, **kw)


def test_bad_shapes():
    q, k, v = _inputs(8, 8, 1, torch.float32)
    with pytest.raises(ValueError, match="not a multiple of 2 KV heads"):
        swaa_attention(q[:, :1].expand(-1, 3, -1, -1), k, v)
    with pytest.raises(ValueError, match="4-D"):
        swaa_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="dtypes differ"):
        swaa_attention(q.double(), k, v)


@pytest.mark.parametrize("lq, lk, w, s", [(40, 40, 8, 4), (40, 40, 8, 20), (1, 99, 16, 3), (17, 60, 4, 100),
                                          (30, 30, 64, 4), (50, 50, 1, 1)])
def test_flash_merge_path_with_the_reference_standing_in_for_the_window(lq, lk, w, s):
    """Stock flash-attn computes only the window; the sinks it misses are merged by LSE. Here the reference
    plays flash-attn's windowed part, so the merge logic is checked on CPU."""
    from swaa.attention.flash import window_plus_sinks
    q, k, v = _inputs(lq, lk, 3, torch.float32)
    window_fn = lambda q, k, v, w, sc: attention_ref(q, k, v, sliding_window_size=w, scale=sc, return_lse=True)
    out, lse = window_plus_sinks(q, k, v, w, s, 0.17, window_fn)
    ref, ref_lse = attention_ref(q, k, v, sliding_window_size=w, keep_first=s, scale=0.17, return_lse=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
