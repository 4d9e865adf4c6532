"""The sink+window KV cache: eviction changes memory, never tokens."""
import pytest
import torch

from swaa import SWAAConfig, apply_swaa
from swaa.integrations.cache import SinkWindowCache, SinkWindowLayer, evicting_layers
from tests.integration.tiny_models import ARCHS, VOCAB, make_model


def _ids(b, n, seed):
    return torch.randint(3, VOCAB, (b, n), generator=torch.Generator().manual_seed(seed))


def _gen(model, ids, evict, **kw):
    apply_swaa(model, model.config.swaa_config, kv_eviction=evict)
    torch.manual_seed(0)
    with torch.no_grad():
        return model.generate(ids, pad_token_id=0, return_dict_in_generate=True, **kw)


CONFIGS = [SWAAConfig(sliding_window_size=5, keep_first=2),
           SWAAConfig(sliding_window_size=4, keep_first=9),                        # sinks larger than the window
           SWAAConfig(sliding_window_size=5, keep_first=0, non_sliding_layers=[1]),
           SWAAConfig(sliding_window_size=3, keep_first=1, force_fa_decode=[0])]   # layer 0 keeps everything


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.mark)
@pytest.mark.parametrize("n_prompt", [5, 6, 7, 23])                               # around S + W - 1 and beyond
def test_greedy_tokens_equal_without_eviction(arch, cfg, n_prompt):
    model = apply_swaa(make_model(arch), cfg)
    ids = _ids(1, n_prompt, seed=n_prompt)
    want = _gen(model, ids, False, max_new_tokens=12, do_sample=False)
    got = _gen(model, ids, True, max_new_tokens=12, do_sample=False)
    assert torch.equal(got.sequences, want.sequences)
    cap = cfg.keep_first + cfg.sliding_window_size - 1
    total = n_prompt + 11                                   # the last generated token is never fed back
    evicting = set(evicting_layers(cfg, model.config.num_hidden_layers))
    for i, layer in enumerate(got.past_key_values.layers):
        assert layer.get_seq_length() == total
        if i in evicting:
            assert isinstance(layer, SinkWindowLayer) and layer.keys.shape[-2] == min(cap, total)
        else:
            assert not isinstance(layer, SinkWindowLayer) and layer.keys.shape[-2] == total
    assert got.past_key_values.get_seq_length() == total


def test_sinks_survive_eviction_with_their_positions():
    cfg = SWAAConfig(sliding_window_size=4, keep_first=3)
    out = _gen(apply_swaa(make_model("llama"), cfg), _ids(1, 30, 1), True, max_new_tokens=5, do_sample=False)
    layer = out.past_key_values.layers[0]
    assert layer.pos[0].tolist() == [0, 1, 2, 31, 32, 33]      # sinks + the last W-1 of 34 tokens


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen3_moe"])
def test_left_padded_batch(arch):
    cfg = SWAAConfig(sliding_window_size=4, keep_first=2)
    model = apply_swaa(make_model(arch), cfg)
    rows = [_ids(1, 21, 3)[0], _ids(1, 9, 4)[0], _ids(1, 4, 5)[0]]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):], mask[b, width - len(r):] = r, 1
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False)
    got = _gen(model, ids, True, **kw)
    assert torch.equal(got.sequences, _gen(model, ids, False, **kw).sequences)
    for b, r in enumerate(rows):                             # and each row equals itself alone
        alone = _gen(model, r[None], True, max_new_tokens=10, do_sample=False).sequences
        assert torch.equal(got.sequences[b, width:], alone[0, len(r):])
    pos = got.past_key_values.layers[0].pos
    assert pos.shape[-1] == 5 and pos[2, :2].tolist() == [0, 1]   # the short row keeps its own first tokens


def test_sampling_beam_search_and_several_sequences():
    cfg = SWAAConfig(sliding_window_size=4, keep_first=2)
    model = apply_swaa(make_model("qwen2"), cfg)
    ids = _ids(2, 15, 7)
    for kw in (dict(do_sample=True, top_k=20, max_new_tokens=10),
               dict(do_sample=True, num_return_sequences=3, max_new_tokens=8),
               dict(do_sample=False, num_beams=3, max_new_tokens=8),
               dict(do_sample=False, num_beams=2, num_return_sequences=2, max_new_tokens=6)):
        got, want = _gen(model, ids, True, **kw), _gen(model, ids, False, **kw)
        assert torch.equal(got.sequences, want.sequences), kw


def test_crop_past_the_evicted_range_is_an_error():
    cfg = SWAAConfig(sliding_window_size=4, keep_first=1)
    model = apply_swaa(make_model("llama"), cfg)
    cache = SinkWindowCache(model.config)
    with torch.no_grad():
        model(_ids(1, 3, 1), past_key_values=cache)           # 3 tokens: nothing evicted yet
        cache.crop(-1)
        assert cache.get_seq_length() == 2 and cache.layers[0].pos.tolist() == [[0, 1]]
        model(_ids(1, 10, 2), past_key_values=cache)          # now the middle is gone
    with pytest.raises(ValueError, match="cannot crop 2 tokens from a SinkWindowCache"):
        cache.crop(-2)


def test_no_eviction_where_nothing_can_be_evicted():
    for cfg in (SWAAConfig(sliding_window_size=4, force_fa_decode=True), SWAAConfig(),
                SWAAConfig(sliding_window_size=4, non_sliding_layers="FFFF")):
        out = _gen(apply_swaa(make_model("llama"), cfg), _ids(1, 12, 1), True, max_new_tokens=4, do_sample=False)
        assert not any(isinstance(l, SinkWindowLayer) for l in out.past_key_values.layers), cfg.mark


def test_default_model_generation_with_eviction():
    from swaa import load_model
    from swaa.evaluation.data import offline_token_ids
    model, tok = load_model()
    apply_swaa(model, SWAAConfig(sliding_window_size=64, keep_first=4))
    ids = offline_token_ids(tok, 300)
    got = _gen(model, ids, True, max_new_tokens=16, do_sample=False)
    want = _gen(model, ids, False, max_new_tokens=16, do_sample=False)
    apply_swaa(model, None)
    assert torch.equal(got.sequences, want.sequences)
    assert all(l.keys.shape[-2] == 4 + 64 - 1 for l in got.past_key_values.layers)


def test_kv_eviction_choice_survives_a_config_change():
    model = apply_swaa(make_model("llama"), SWAAConfig(sliding_window_size=4, keep_first=1), kv_eviction=False)
    apply_swaa(model, SWAAConfig(sliding_window_size=5, keep_first=2))           # e.g. a helper switching configs
    out = _gen(model, _ids(1, 12, 1), False, max_new_tokens=3, do_sample=False)
    assert not any(isinstance(l, SinkWindowLayer) for l in out.past_key_values.layers)
    assert model._swaa_kv_eviction is False
    fresh = apply_swaa(make_model("llama"), SWAAConfig(sliding_window_size=4))
    assert fresh._swaa_kv_eviction is True


@pytest.mark.parametrize("window, sinks", [(5, 3), (1, 2), (4, 0), (3, 9)])
def test_fast_eviction_equals_the_positional_path(window, sinks):
    """Without padding, eviction is two slices with no host sync; it keeps the same slots as the sort-and-gather
    path that padded batches take, step after step (prefill, then single-token decode)."""
    fast, slow = SinkWindowLayer(window, sinks), SinkWindowLayer(window, sinks)
    torch.manual_seed(0)
    for q in (11, 1, 1, 4, 1, 1, 1):
        k, v = torch.randn(2, 3, q, 8), torch.randn(2, 3, q, 8)
        slow.canonical = False                              # forces the general path
        kf, vf = fast.update(k, v)
        ks, vs = slow.update(k, v)
        assert torch.equal(kf, ks) and torch.equal(vf, vs) and torch.equal(fast.attn_pos, slow.attn_pos)
        assert torch.equal(fast.keys, slow.keys) and torch.equal(fast.values, slow.values)
        assert torch.equal(fast.pos, slow.pos)
        assert fast.canonical and fast.keys.shape[-2] <= sinks + window - 1
    assert fast.evicted and fast.attn_contiguous is False
