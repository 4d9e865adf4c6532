"""The vLLM plugin's pure parts on CPU, without vLLM: the step layout of windowed rows (tiles on CPU, packed segments
for the CUDA varlen kernel) read from paged [K | V] rows, against attention_ref on packed batches with prefill chunks,
decode rows, FA-decode rows left to vLLM, sinks larger than the window; block freeing; config checks."""
import pytest
import torch

from swaa.attention.reference import attention_ref
from swaa.config import SWAAConfig
from swaa.integrations.vllm import rules, step
from swaa.integrations.vllm.attend import attend_packed, attend_tiles

BS = 4


def _paged(seqs, hkv, d, nb=64, seed=0, cuda=False, bs=BS):
    """Pages (nb, Hkv, bs, 2D) holding the K/V of each sequence, blocks scattered by a random block table: in the
    windowed layers' CPU order (written by rules.write_kv), or with ``cuda`` as vLLM's CUDA pages ([K | V] rows)."""
    g = torch.Generator().manual_seed(seed)
    pages = torch.zeros(nb, hkv, bs, 2 * d)
    perm = torch.randperm(nb - 1, generator=g) + 1          # block 0 stays the null block
    width = max(-(-k.shape[0] // bs) for k, _ in seqs) + 2
    tables, used = [], 0
    for k, v in seqs:
        n = -(-k.shape[0] // bs)
        row = perm[used:used + n]
        used += n
        tables.append(torch.cat([row, torch.zeros(width - n, dtype=row.dtype)]))
        slots = row[torch.arange(k.shape[0]) // bs] * bs + torch.arange(k.shape[0]) % bs
        if cuda:
            pages[slots // bs, :, slots % bs] = torch.cat([k, v], -1)
        else:
            rules.write_kv(pages, k, v, torch.cat([slots, torch.tensor([-1])]))   # a padding slot is skipped
    return pages, torch.stack(tables).int()


def _batch(lens, q_lens, hq=6, hkv=2, d=16, seed=0, cuda=False, bs=BS, nb=64):
    torch.manual_seed(seed)
    seqs = [(torch.randn(n, hkv, d), torch.randn(n, hkv, d)) for n in lens]
    pages, table = _paged(seqs, hkv, d, nb=nb, cuda=cuda, bs=bs)
    q = torch.randn(sum(q_lens), hq, d)
    return seqs, pages, table, q, torch.tensor([0] + q_lens).cumsum(0), torch.tensor(lens)


def _expected(seqs, q, qsl, plan, decode):
    """attention_ref of each request alone on all its keys: (rows, Hq, D)."""
    out = []
    for r, (k, v) in enumerate(seqs):
        fa = decode[r] and plan.fa_decode
        qr = q[qsl[r]:qsl[r + 1]].transpose(0, 1)[None]                     # (1, Hq, Lq, D)
        ref = attention_ref(qr, k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                            sliding_window_size=None if fa else plan.window, keep_first=0 if fa else plan.keep_first)
        out.append(ref[0].transpose(0, 1))
    return torch.cat(out)


CONFIGS = [
    SWAAConfig(sliding_window_size=3, keep_first=1),
    SWAAConfig(sliding_window_size=1, keep_first=0),
    SWAAConfig(sliding_window_size=5, keep_first=7),                       # sinks larger than the window
    SWAAConfig(sliding_window_size=4, keep_first=2, force_fa_decode=True),
    SWAAConfig(sliding_window_size=64, keep_first=0),                      # window longer than the sequences
]
# a first chunk, a later chunk, decode rows (one at a short sequence), a one-token prefill chunk
LENS, Q_LENS, PREFILLING = [13, 29, 21, 2, 6], [13, 9, 1, 1, 1], [True, True, False, False, True]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("tile", [1, 4, 64])
def test_cpu_tiles_match_attention_ref(cfg, tile):
    """The CPU layout (decode-sized tiles for one-query runs, ``tile`` for the others) gives each windowed row the
    reference; under FA decode the decode rows are left alone (vLLM's kernel computes them)."""
    plan = cfg.layer(0)
    seqs, pages, table, q, qsl, seq = _batch(LENS, Q_LENS)
    pre = torch.tensor(PREFILLING)
    use = pre if plan.fa_decode else torch.ones_like(pre)
    one = (qsl[1:] - qsl[:-1]) == 1
    out = torch.full_like(q, float("nan"))
    for sel, size in ((use & one, 1), (use & ~one, tile)):
        t = step.tiles(step.segments(qsl, seq, sel, plan.window, plan.keep_first, size), table, BS, plan.window,
                       plan.keep_first, size, q.dtype, 6, 2)
        k_rows = rules.page_rows(t.slots, BS)
        attend_tiles(q, pages.view(-1, 2 * 16), t, k_rows, k_rows + BS, 16 ** -0.5, out)
    expect = _expected(seqs, q, qsl, plan, [not p for p in PREFILLING])
    rows = torch.repeat_interleave(use, qsl[1:] - qsl[:-1])
    torch.testing.assert_close(out[rows], expect[rows], atol=1e-5, rtol=1e-5)
    assert out[~rows].isnan().all()


def _varlen_reference(q, k, v, cu_q, cu_k, max_q, max_k, *, sliding_window_size, keep_first, scale):
    """What swaa_attention_varlen computes, by attention_ref on each sequence (it stands in for the GPU kernel)."""
    outs = []
    for i in range(cu_q.numel() - 1):
        qs, ks = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        o = attention_ref(q[qs].transpose(0, 1)[None], k[ks].transpose(0, 1)[None], v[ks].transpose(0, 1)[None],
                          sliding_window_size=sliding_window_size, keep_first=keep_first, scale=scale)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cuda_varlen_layout_with_the_reference_standing_in_for_the_kernel(cfg):
    """The CUDA backend's layout: one segment per request, its sinks and window renumbered from 0, one varlen call
    for all windowed rows; with the reference as the kernel each row gets the reference of its request."""
    plan = cfg.layer(0)
    seqs, pages, table, q, qsl, seq = _batch(LENS, Q_LENS, seed=1, cuda=True)
    pre = torch.tensor(PREFILLING)
    use = pre if plan.fa_decode else torch.ones_like(pre)
    seg = step.segments(qsl, seq, use, plan.window, plan.keep_first)
    p = step.packed(seg, table, BS)
    assert int(p.cu_k[-1]) <= sum(min(n, plan.keep_first + plan.window - 1 + ql) for n, ql in zip(LENS, Q_LENS))
    out = torch.full_like(q, float("nan"))
    attend_packed(q, pages, p, plan.window, plan.keep_first, 16 ** -0.5, out, _varlen_reference)
    rows = torch.repeat_interleave(use, qsl[1:] - qsl[:-1])
    expect = _expected(seqs, q, qsl, plan, [not x for x in PREFILLING])
    torch.testing.assert_close(out[rows], expect[rows], atol=1e-5, rtol=1e-5)
    assert out[~rows].isnan().all()


def test_segments_read_sinks_and_window_once():
    """A decode row at position 19 with W=4, S=3 reads keys 0, 1, 2 and 16..19; sinks covering the window are read
    once; tiles of 2 of a 5-query chunk start where they should."""
    seg = step.segments(torch.tensor([0, 1]), torch.tensor([20]), torch.tensor([True]), 4, 3)
    p = step.packed(seg, torch.arange(5)[None], 4)
    assert p.slots.tolist() == [0, 1, 2, 16, 17, 18, 19]
    seg = step.segments(torch.tensor([0, 1]), torch.tensor([20]), torch.tensor([True]), 4, 30)
    assert step.packed(seg, torch.arange(5)[None], 4).slots.tolist() == list(range(20))
    seg = step.segments(torch.tensor([0, 5]), torch.tensor([12]), torch.tensor([True]), 4, 1, size=2)
    assert (seg.a.tolist(), seg.b.tolist(), seg.lo.tolist(), seg.ns.tolist()) == ([7, 9, 11], [9, 11, 12],
                                                                                  [4, 6, 8], [1, 1, 1])
    assert seg.row.tolist() == [0, 2, 4]


def test_requests_without_queries_are_skipped():
    seg = step.segments(torch.tensor([0, 5, 6, 6]), torch.tensor([5, 30, 0]), torch.ones(3, dtype=torch.bool), 8, 0)
    assert seg.req.tolist() == [0, 1]


@pytest.mark.parametrize("sinks,window,computed,bs,expect", [
    (4, 64, 450, 32, (1, 12)),     # keep block 0 (sinks), free 1..11, keep the window's blocks
    (0, 64, 450, 32, (0, 12)),
    (40, 64, 450, 32, (2, 12)),
    (4, 64, 60, 32, (1, 1)),       # nothing yet outside the window
    (100, 16, 90, 32, (4, 4)),     # sinks past the window: nothing to free
])
def test_blocks_to_free(sinks, window, computed, bs, expect):
    lo, hi = rules.blocks_to_free(sinks, window, computed, bs)
    assert (lo, hi) == expect
    # every freed block lies entirely between the sinks and the window of the next query
    for b in range(lo, hi):
        assert b * bs >= sinks and (b + 1) * bs <= computed - window + 1


def test_layer_index_and_config_errors():
    assert rules.layer_index("model.layers.17.self_attn.attn") == 17
    with pytest.raises(ValueError, match="one layer index"):
        rules.layer_index("model.encoder.layers.1.cross.2.attn")

    class Cfg:
        num_hidden_layers = 4
        swaa_config = {"sliding_window_size": 8, "keep_first": -1}
    with pytest.raises(ValueError, match="keep_first=-1"):
        rules.config_from_hf(Cfg())
    Cfg.swaa_config = {"sliding_window_size": 8, "non_sliding_layers": [9, 1]}
    with pytest.warns(UserWarning, match=r"non_sliding_layers \[9\] are beyond the 4 layers"):
        assert [rules.config_from_hf(Cfg()).layer(i).window for i in range(4)] == [8, None, 8, 8]
    Cfg.swaa_config = None
    assert rules.config_from_hf(Cfg()) is None


def test_a_model_with_its_own_window_is_refused_before_any_engine(tmp_path):
    """vLLM would run the model's window under SWAA's: named at config time, with the overrides that turn it off
    (which then work); a model with a window but no SWAA config is left alone."""
    import transformers
    from swaa.integrations.vllm.offline import make_llm
    swaa = {"sliding_window_size": 8, "keep_first": 2}
    mistral = transformers.MistralConfig(num_hidden_layers=2, sliding_window=16)
    assert rules.config_from_hf(mistral) is None
    mistral.swaa_config = swaa
    with pytest.raises(ValueError, match=r'has a native sliding_window=16; .* hf_overrides=\{"sliding_window": None, '
                                         r'"swaa_config": \.\.\.\}'):
        rules.config_from_hf(mistral)
    mistral.sliding_window = None
    assert rules.config_from_hf(mistral) == SWAAConfig(**swaa)
    qwen = transformers.Qwen3Config(num_hidden_layers=4, use_sliding_window=True, sliding_window=8, max_window_layers=2,
                                    swaa_config=swaa)
    with pytest.raises(ValueError, match=r'"sliding_window": None, "layer_types": \["full_attention"\] \* 4'):
        rules.config_from_hf(qwen)
    transformers.MistralConfig(num_hidden_layers=2, sliding_window=16).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path} has a native sliding_window=16"):
        make_llm(str(tmp_path), swaa)
