"""Our Triton kernels under TRITON_INTERPRET=1 (CPU) at small sizes, against attention_ref: forward with LSE,
backward, varlen packs of several sequences, decode (split over keys) and its alignment. tests/gpu runs the
same kernels compiled, at full size."""
import itertools

import pytest
import torch

from swaa.attention import attention_ref, available_backends, resolve_backend, swaa_attention
from tests.conftest import assert_close_to_ref, assert_grads_close_to_ref

pytestmark = pytest.mark.skipif(available_backends()["triton"] is not None,
                                reason=f"triton backend unavailable: {available_backends()['triton']}")

SHAPES = [(1, 1), (17, 17), (70, 70), (113, 203), (1, 339), (203, 113), (97, 97)]
CASES = [(lq, lk, w, s, g) for n, ((lq, lk), (w, s), g) in enumerate(itertools.product(
    SHAPES, [(1, 0), (16, 4), (16, 40), (8, 1), (2048, 0), (None, 0)], [1, 3, 4])) if n % 3 == 0]


def _qkv(lq, lk, g, dtype, d=32, hkv=2, b=2, grad=False):
    mk = lambda h, l: torch.randn(b, h, l, d, dtype=dtype, requires_grad=grad)
    return mk(hkv * g, lq), mk(hkv, lk), mk(hkv, lk)


@pytest.fixture(params=["loop", "deferred-pv"])
def fwd_loop(request, monkeypatch):
    """Both forward loops (the deferred P V one is the default at 64 < head_dim <= 128, these tests use 32)."""
    from swaa.attention.triton import tuning
    monkeypatch.setattr(tuning, "defer_pv", lambda d: request.param == "deferred-pv")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, g", CASES)
def test_forward_and_lse(lq, lk, w, s, g, dtype, fwd_loop):
    q, k, v = _qkv(lq, lk, g, dtype)
    kw = dict(sliding_window_size=w, keep_first=s)
    with torch.no_grad():
        out, lse = swaa_attention(q, k, v, backend="triton", return_lse=True, **kw)
    ref, ref_lse = attention_ref(q, k, v, return_lse=True, **kw)
    assert_close_to_ref(out, ref, attention_ref(q, k, v, upcast=False, **kw))
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert (lse[fin] - ref_lse[fin]).abs().max() <= (2e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, g", [c for c in CASES if c[0] > 1][::2])
def test_backward(lq, lk, w, s, g, dtype):
    q, k, v = _qkv(lq, lk, g, dtype, grad=True)
    assert_grads_close_to_ref(q, k, v, torch.randn(q.shape, dtype=dtype), floor=1e-4, sliding_window_size=w,
                              keep_first=s)


# the dK/dV kernel's split of the sink blocks' later queries over extra programs (interpreter tiles are 32 x 32):
# several sink blocks (S > BLOCK_N, S not a multiple of it), S > W, W = 1, many chunks, queries aligned to the end
# of longer keys (chunked prefill) and more queries than keys
SPLIT_CASES = [(150, 150, 8, 40, 3), (150, 150, 1, 70, 1), (97, 160, 16, 33, 2), (160, 97, 4, 5, 4),
               (129, 129, 64, 100, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lq, lk, w, s, g", SPLIT_CASES)
def test_backward_with_sink_blocks_split(lq, lk, w, s, g, dtype):
    from swaa.attention.triton import tuning
    from swaa.attention.triton.autograd import sink_split
    from swaa.attention.triton.layout import Geometry
    q, k, v = _qkv(lq, lk, g, dtype, grad=True)
    bm, bn = tuning.tiles("dkdv", 32)[:2]
    nsb, chunk, parts = sink_split(Geometry(q, k), w, s, bm, bn)
    assert nsb == -(-min(s, lk) // bn) and parts > 2                  # the split runs, with several chunks
    assert_grads_close_to_ref(q, k, v, torch.randn(q.shape, dtype=dtype), floor=1e-4, sliding_window_size=w,
                              keep_first=s)


@pytest.mark.parametrize("varlen", [False, True])
def test_backward_rows_that_see_no_key(varlen):
    """The dQ kernel computes delta and the LSE with +inf for rows that see no key, for its own rows, before dK/dV
    reads them: more queries than keys (the first rows see nothing), sinks, several sequences of other lengths."""
    from swaa.attention.triton import swaa_attention_varlen
    lens_q, lens_k = ([150, 7, 40], [97, 30, 40]) if varlen else ([150], [97])
    mk = lambda lens, h: torch.randn(sum(lens), h, 32, requires_grad=True)
    q, k, v = mk(lens_q, 6), mk(lens_k, 2), mk(lens_k, 2)
    cu = lambda lens: torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32)
    tr = lambda t: t.transpose(0, 1)[None]                               # (L, H, D) -> (1, H, L, D)
    if varlen:
        out = swaa_attention_varlen(q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k),
                                    sliding_window_size=16, keep_first=5)
    else:
        out = swaa_attention(tr(q), tr(k), tr(v), sliding_window_size=16, keep_first=5, backend="triton")
    got = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert got[0][:53].abs().max() == 0          # the first query rows see no key: no gradient
    bounds = lambda lens: list(itertools.pairwise([0, *itertools.accumulate(lens)]))
    for (qa, qb), (ka, kb) in zip(bounds(lens_q), bounds(lens_k)):
        parts = [t.detach()[a:b].requires_grad_(True) for t, a, b in ((q, qa, qb), (k, ka, kb), (v, ka, kb))]
        ref = attention_ref(*(tr(t) for t in parts), sliding_window_size=16, keep_first=5)
        want = torch.autograd.grad(ref, parts, torch.ones_like(ref))
        for g, w_, (a, b) in zip(got, want, ((qa, qb), (ka, kb), (ka, kb))):
            torch.testing.assert_close(g[a:b], w_, atol=5e-5, rtol=1e-4)


def test_sink_split_sizes():
    from swaa.attention.triton.autograd import sink_split as _sink_split
    from swaa.attention.triton.layout import Geometry
    mk = lambda lq, lk: Geometry(torch.empty(1, 32, lq, 128), torch.empty(1, 8, lk, 128))
    assert _sink_split(mk(32768, 32768), 2048, 100, 64, 64) == (2, 33, 17)        # chunks of a window's work
    assert _sink_split(mk(131072, 131072), 1, 4, 64, 64) == (1, 32, 65)           # at most ~64 chunks
    assert _sink_split(mk(32768, 32768), 2048, 0, 64, 64) is None                 # no sinks
    assert _sink_split(mk(4096, 4096), 4096, 100, 64, 64) is None                 # the window covers every key


def _pack(seqs):
    cu = torch.tensor([0] + list(itertools.accumulate(t.shape[0] for t in seqs)), dtype=torch.int32)
    return torch.cat(seqs, 0), cu


@pytest.mark.parametrize("w, s", [(8, 2), (1, 3), (None, 0), (40, 0)])
def test_varlen_several_sequences_forward_and_backward(w, s, fwd_loop):
    from swaa.attention.triton import swaa_attention_varlen
    lens_q, lens_k, hkv, g, d = [17, 64, 5, 1], [17, 80, 5, 33], 1, 3, 32      # last two: decode alignment
    qs = [torch.randn(n, hkv * g, d, requires_grad=True) for n in lens_q]
    ks = [torch.randn(n, hkv, d, requires_grad=True) for n in lens_k]
    vs = [torch.randn(n, hkv, d, requires_grad=True) for n in lens_k]
    (q, cu_q), (k, cu_k), (v, _) = _pack(qs), _pack(ks), _pack(vs)
    out, lse = swaa_attention_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), sliding_window_size=w,
                                     keep_first=s, return_lse=True)
    do = torch.randn_like(out)
    grads = torch.autograd.grad(out, qs + ks + vs, do)
    for i in range(len(lens_q)):
        a, b = int(cu_q[i]), int(cu_q[i + 1])
        tr = lambda t: t.transpose(0, 1)[None]                               # (L, H, D) -> (1, H, L, D)
        ref, ref_lse = attention_ref(tr(qs[i]), tr(ks[i]), tr(vs[i]), sliding_window_size=w, keep_first=s,
                                     return_lse=True)
        torch.testing.assert_close(out[a:b], ref[0].transpose(0, 1), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lse[:, a:b], ref_lse[0], atol=2e-5, rtol=1e-4)
        rg = torch.autograd.grad(ref, (qs[i], ks[i], vs[i]), tr(do[a:b]))
        for got, want in zip((grads[i], grads[4 + i], grads[8 + i]), rg):
            torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


def test_varlen_bad_input_names_it():
    from swaa.attention.triton import swaa_attention_varlen
    q = torch.randn(10, 2, 32)
    with pytest.raises(ValueError, match=r"cu_seqlens_q must be int32 .* ending at 10"):
        swaa_attention_varlen(q, q, q, torch.tensor([0, 4, 9]), torch.tensor([0, 4, 10], dtype=torch.int32), 5, 6)
    with pytest.raises(ValueError, match="keep_first=-1"):
        swaa_attention_varlen(q, q, q, torch.tensor([0, 10], dtype=torch.int32),
                              torch.tensor([0, 10], dtype=torch.int32), 10, 10, sliding_window_size=4, keep_first=-1)


@pytest.mark.parametrize("lq", [1, 3])
@pytest.mark.parametrize("w, s", [(None, 0), (16, 4), (1, 0), (50, 100), (400, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("one_pass", [False, True], ids=["split", "one-pass"])
def test_decode_split_over_keys(lq, w, s, dtype, one_pass):
    """Both decode launches: several splits and the merge, and one program per (sequence, KV head) walking the
    sink span and then the window span."""
    from swaa.attention.triton import triton_decode
    q, k, v = _qkv(lq, 333, 4, dtype)
    kw = dict(sliding_window_size=w, keep_first=s)
    split = dict(one_pass=True) if one_pass else dict(chunk=64)
    out, lse = triton_decode(q, k, v, window=w, keep_first=s, return_lse=True, **split)
    ref, ref_lse = attention_ref(q, k, v, return_lse=True, **kw)
    assert_close_to_ref(out, ref, attention_ref(q, k, v, upcast=False, **kw))
    assert (lse - ref_lse).abs().max() <= (2e-2 if dtype == torch.bfloat16 else 1e-5)
    with torch.no_grad():                       # the registry routes decode shapes to the same kernel
        assert_close_to_ref(swaa_attention(q, k, v, backend="triton", **kw), ref,
                            attention_ref(q, k, v, upcast=False, **kw))


def test_decode_visits_sinks_and_window_only():
    from swaa.attention.triton.decode import decode_ranges as _decode_ranges
    for lk in (10_000, 100_000, 1_000_000):
        spans = _decode_ranges(1, lk, 2048, 100, 512)
        assert sum(b - a for a, b in spans) == 100 + 2048                     # independent of the cache length
        assert spans[0] == (0, 100) and spans[-1][1] == lk
    assert sum(b - a for a, b in _decode_ranges(1, 5000, None, 0, 512)) == 5000
    assert _decode_ranges(2, 10, 50, 4, 64) == [(0, 10)]                       # window covers everything


def test_auto_never_picks_the_interpreter():
    q, k, v = _qkv(8, 8, 1, torch.float32)
    assert resolve_backend("auto", q, k, v, window=4).name == "sdpa"


def test_triton_rank_follows_the_h200_measurements():
    # the ordering `auto` uses on CUDA, checked on CPU tensors (the rank is pure host logic)
    from swaa.attention import _triton_rank
    q128, q64 = torch.empty(1, 8, 4096, 128), torch.empty(1, 8, 4096, 64)
    assert _triton_rank(q128, q128, 2048, None) == 5                       # inference window, head_dim 128: ours
    assert _triton_rank(q64, q64, 2048, None) == 15                        # head_dim 64, short: after flex (10)
    assert _triton_rank(q64, q64, 4096, None) == 5                         # ... but ours with a 4k window
    assert _triton_rank(torch.empty(1, 8, 16384, 64), q64, 2048, None) == 5
    assert _triton_rank(q64[:, :, :1], q64, 2048, None) == 5               # windowed decode
    long = torch.empty(1, 8, 65536, 64)
    assert _triton_rank(q64[:, :, :1], long, None, None) == 2              # full-attention decode, 8 pairs: ours
    assert _triton_rank(q64[:, :, :1], q64, None, None) == 35              # a short cache: after SDPA (3)
    wide = torch.empty(2, 8, 65536, 64)
    assert _triton_rank(q64[:, :, :1].expand(2, -1, -1, -1), wide, None, None) == 35   # 16 pairs: after SDPA
    assert _triton_rank(q128, q128, None, None) == 35                      # full prefill: after SDPA (20)
    qg = q64.clone().requires_grad_(True)
    assert _triton_rank(qg, q64, 2048, None, keep_first=0) == 45           # training without sinks, 64, 4k: flex
    q64_long = torch.empty(1, 8, 16384, 64, requires_grad=True)
    assert _triton_rank(q64_long, q64_long, 2048, None, keep_first=0) == 5  # from 16k queries on: ours
    assert _triton_rank(q64_long, q64_long, 2048, None, keep_first=100) == 5
    assert _triton_rank(qg, q64, 2048, None, keep_first=100) == 45         # with sinks too (host-bound at 4k)
    assert _triton_rank(qg, q64, None, None, keep_first=0) == 35
    qg128 = q128.clone().requires_grad_(True)
    assert _triton_rank(qg128, q128, 2048, None, keep_first=0) == 5        # without sinks at 128: ours
    assert _triton_rank(qg128, q128, None, None, keep_first=0) == 35


def test_flex_flash_takes_long_inference_windows_at_head_dim_128():
    from swaa.attention import _flex_flash_rank
    q = torch.empty(1, 32, 32768, 128)
    assert _flex_flash_rank(q, q, 2048, None) == 4                          # before ours (5)
    assert _flex_flash_rank(q[:, :, :16384], q, 2048, None) == 60          # shorter: not measured ahead
    assert _flex_flash_rank(q, q, None, None) == 60                          # full attention: SDPA
    assert _flex_flash_rank(q[..., :64], q[..., :64], 2048, None) == 60
    assert _flex_flash_rank(q.clone().requires_grad_(True), q, 2048, None) == 60   # training: ours


def test_sdpa_leads_one_decode_query_over_one_run_of_keys():
    from swaa.attention import _sdpa_rank
    q, k = torch.empty(1, 8, 1, 64), torch.empty(1, 2, 5000, 64)
    assert _sdpa_rank(q, k, None, None) == 3                               # full attention
    assert _sdpa_rank(q, k, 2048, None, keep_first=0) == 3                 # window alone
    assert _sdpa_rank(q, k[:, :, :2100], 2048, None, keep_first=100) == 3  # sinks touch the window (evicted cache)
    assert _sdpa_rank(q, k, 2048, None, keep_first=100) == 20              # sinks apart from the window: ours
    assert _sdpa_rank(torch.empty(1, 8, 2, 64), k, None, None) == 20       # two queries


@pytest.mark.parametrize("variant", ["rescale-always", "deferred-pv"])
@pytest.mark.parametrize("w, s", [(None, 0), (40, 3)])
def test_forward_when_row_maxima_keep_growing(variant, w, s, monkeypatch):
    """Scores that grow along the keys (each block's max far above the last): the running rescale and the deferred
    P V loop (which applies each block's rescale one block late) both match the reference, LSE included."""
    from swaa.attention.triton import tuning
    monkeypatch.setattr(tuning, "defer_pv", lambda d: variant == "deferred-pv")
    q, k, v = _qkv(150, 150, 2, torch.bfloat16)
    k = (k.float() * torch.linspace(0.1, 6.0, 150)[None, None, :, None]).to(torch.bfloat16)
    kw = dict(sliding_window_size=w, keep_first=s)
    with torch.no_grad():
        out, lse = swaa_attention(q, k, v, backend="triton", return_lse=True, **kw)
    ref, ref_lse = attention_ref(q, k, v, return_lse=True, **kw)
    assert_close_to_ref(out, ref, attention_ref(q, k, v, upcast=False, **kw))
    assert (lse - ref_lse).abs().max() <= 5e-2



def test_backward_of_views_into_a_packed_qkv():
    """q, k, v sliced out of one packed (B, L, 3, H, D) projection are neither contiguous nor dense; the gradients
    must land in their own layout, not in q's strides over a contiguous buffer."""
    qkv = torch.randn(2, 37, 3, 4, 32, dtype=torch.float16)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))            # (B, H, L, D), token stride 3 * H * D
    assert not q.is_contiguous() and torch.empty_like(q).stride() != q.stride()
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    assert_grads_close_to_ref(q, k, v, torch.randn(q.shape, dtype=torch.float16), floor=1e-4,
                              sliding_window_size=8, keep_first=2)


def test_dense_layouts_are_kept_and_gapped_ones_copied_for_the_backward():
    from swaa.attention.triton.layout import is_dense as _dense
    from swaa.attention.triton.layout import kernel_layout as _kernel_layout
    x = torch.zeros(2, 5, 3, 4, 8)
    hf = torch.zeros(2, 5, 4, 8).transpose(1, 2)           # (B, L, H, D) seen as (B, H, L, D): dense, kept
    assert _dense(torch.zeros(2, 4, 5, 8)) and _dense(hf) and _kernel_layout(hf, True) is hf
    sliced = x[:, :, 0].transpose(1, 2)                     # a packed qkv's q: gaps between tokens
    assert not _dense(sliced) and _kernel_layout(sliced, False) is sliced        # the forward reads it in place
    assert _kernel_layout(sliced, True).is_contiguous()
    assert not _dense(torch.zeros(2, 1, 5, 8).expand(2, 4, 5, 8))                # overlapping: broadcast heads


def test_launch_bookkeeping_is_done_once_per_device(monkeypatch):
    """The host work a launch repeats is looked up once: the dense cu_seqlens stand-in (one int32 zero per device,
    not an allocation and a fill per call) and the compute capability (torch's lookup costs ~15 us, and a
    forward+backward asks a dozen times)."""
    import swaa.attention.triton.layout as T
    geo_a = T.Geometry(*_qkv(4, 2, 8, torch.float32)[:2])
    geo_b = T.Geometry(*_qkv(2, 1, 5, torch.float32)[:2])
    assert geo_a.cu_q is geo_b.cu_q is geo_a.cu_k
    assert geo_a.cu_q.dtype == torch.int32 and geo_a.cu_q.tolist() == [0]
    calls = []
    monkeypatch.setattr(T, "_CAPABILITY", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: calls.append(i) or (9, 0))
    dev = torch.device("cuda", 3)
    assert [T.capability(dev) for _ in range(5)] == [(9, 0)] * 5
    assert calls == [3]
