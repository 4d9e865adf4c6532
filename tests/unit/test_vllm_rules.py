"""The vLLM plugin's pure parts on CPU, without vLLM: paged K/V write/read, per-request rows, the rule on a
packed batch (prefill chunks, decode rows, FA decode, sinks > window) against attention_ref, and block freeing."""
import pytest
import torch

from swaa.attention.reference import attention_ref
from swaa.config import SWAAConfig
from swaa.integrations.vllm import rules


def _paged(seqs, hkv=2, d=16, bs=4, nb=64, seed=0):
    """A paged cache holding the full K/V of each sequence, blocks scattered by a random block table."""
    g = torch.Generator().manual_seed(seed)
    cache = torch.zeros(nb, hkv, bs, 2 * d)
    perm = torch.randperm(nb - 1, generator=g) + 1          # block 0 stays the null block
    tables, used = [], 0
    for k, v in seqs:
        n = -(-k.shape[0] // bs)
        row = perm[used:used + n]
        used += n
        tables.append(torch.cat([row, torch.zeros(16 - n, dtype=row.dtype)]))
        slots = (row[torch.arange(k.shape[0]) // bs] * bs + torch.arange(k.shape[0]) % bs)
        rules.write_kv(cache, k, v, torch.cat([slots, torch.tensor([-1])]))   # a padding slot is skipped
    return cache, torch.stack(tables).int()


@pytest.mark.parametrize("cfg", [
    SWAAConfig(sliding_window_size=3, keep_first=1),
    SWAAConfig(sliding_window_size=1, keep_first=0),
    SWAAConfig(sliding_window_size=5, keep_first=7),                       # sinks larger than the window
    SWAAConfig(sliding_window_size=4, keep_first=2, force_fa_decode=True),
    SWAAConfig(sliding_window_size=64, keep_first=0),                      # window longer than the sequences
])
def test_packed_batch_matches_attention_ref(cfg):
    torch.manual_seed(0)
    hq, hkv, d = 6, 2, 16
    lens, q_lens, prefilling = [13, 9, 21, 6], [13, 4, 1, 1], [True, True, False, True]
    seqs = [(torch.randn(n, hkv, d), torch.randn(n, hkv, d)) for n in lens]
    cache, table = _paged(seqs, hkv, d)
    q = torch.randn(sum(q_lens), hq, d)
    qsl = torch.tensor([0] + q_lens).cumsum(0)
    rows = rules.request_rows(qsl, torch.tensor(lens), torch.tensor(prefilling))
    plan = cfg.layer(0)
    out = rules.swaa_paged_attention(plan, q, cache, table, rows, d ** -0.5, torch.empty_like(q))
    for r, req in enumerate(rows):
        k, v = seqs[r]
        qr = q[req.start:req.end].transpose(0, 1)[None]                    # (1, Hq, Lq, D)
        decode_fa = req.decode and plan.fa_decode
        ref = attention_ref(qr, k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                            sliding_window_size=None if decode_fa else plan.window,
                            keep_first=0 if decode_fa else plan.keep_first)
        torch.testing.assert_close(out[req.start:req.end], ref[0].transpose(0, 1), atol=1e-5, rtol=1e-5)
    assert [r.decode for r in rows] == [False, False, True, False]


def test_key_positions_skip_the_middle_and_never_repeat():
    plan = SWAAConfig(sliding_window_size=4, keep_first=3).layer(0)
    req = rules.RequestRows(0, 0, 1, 20, True)
    assert rules.key_positions(plan, req).tolist() == [0, 1, 2, 16, 17, 18, 19]
    plan = SWAAConfig(sliding_window_size=4, keep_first=30).layer(0)       # sinks cover the window: once each
    assert rules.key_positions(plan, req).tolist() == list(range(20))
    fa = SWAAConfig(sliding_window_size=4, keep_first=3, force_fa_decode=True).layer(0)
    assert rules.key_positions(fa, req).tolist() == list(range(20))


def test_rows_without_prefill_flags_and_padding_rows():
    rows = rules.request_rows(torch.tensor([0, 5, 6, 6]), torch.tensor([5, 30, 0]))
    assert [(r.index, r.q_len, r.decode) for r in rows] == [(0, 5, False), (1, 1, True)]


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


def test_dense_path_with_the_reference_standing_in_for_the_gpu_kernel():
    """The CUDA backend hands gap-free requests (prefills, FA-decode rows) to a fused kernel through dense_fn; with
    attention_ref as that kernel the packed batch gives the same result as the SDPA path."""
    torch.manual_seed(1)
    hq, hkv, d = 4, 2, 16
    lens, q_lens, prefilling = [17, 30, 11], [17, 1, 5], [True, False, True]
    seqs = [(torch.randn(n, hkv, d), torch.randn(n, hkv, d)) for n in lens]
    cache, table = _paged(seqs, hkv, d)
    q = torch.randn(sum(q_lens), hq, d)
    rows = rules.request_rows(torch.tensor([0] + q_lens).cumsum(0), torch.tensor(lens), torch.tensor(prefilling))
    calls = []

    def ref_kernel(qd, kd, vd, window, keep_first, scale):
        calls.append(qd.shape[2])
        return attention_ref(qd, kd, vd, sliding_window_size=window, keep_first=keep_first, scale=scale)

    for cfg in (SWAAConfig(sliding_window_size=4, keep_first=2), SWAAConfig(sliding_window_size=4, keep_first=2,
                                                                            force_fa_decode=True)):
        plan = cfg.layer(0)
        a = rules.swaa_paged_attention(plan, q, cache, table, rows, d ** -0.5, torch.empty_like(q))
        b = rules.swaa_paged_attention(plan, q, cache, table, rows, d ** -0.5, torch.empty_like(q), dense_fn=ref_kernel)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert calls == [17, 17, 1]   # only gap-free key ranges go to the kernel (a later chunk skips the middle)
