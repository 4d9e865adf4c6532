"""The transformers integration on tiny random-weight Llama, Qwen2, Qwen3, Qwen3-MoE (required) and Mistral."""
import copy

import pytest
import torch
import transformers

from swaa import SWAAConfig, apply_swaa
from swaa.integrations.transformers import prompt_length_from_labels
from tests.integration.tiny_models import ARCHS, BONUS, REQUIRED, VOCAB, make_model, with_independent

ALL = list(ARCHS)
N = 48


def _ids(b=2, n=N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (b, n), generator=g)


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(ids, **kw).logits


@pytest.mark.parametrize("arch", ALL)
def test_window_covering_everything_equals_sdpa(arch):
    ids = _ids()
    ref = _logits(make_model(arch), ids)
    for cfg in (SWAAConfig(), SWAAConfig(sliding_window_size=N), SWAAConfig(sliding_window_size=10_000)):
        m = apply_swaa(make_model(arch), cfg)
        torch.testing.assert_close(_logits(m, ids), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ALL)
@pytest.mark.parametrize("cfg", [
    SWAAConfig(sliding_window_size=6),
    SWAAConfig(sliding_window_size=6, keep_first=3),
    SWAAConfig(sliding_window_size=4, keep_first=9),                 # sinks larger than the window
    SWAAConfig(sliding_window_size=1, keep_first=1),
    SWAAConfig(sliding_window_size=5, keep_first=2, non_sliding_layers=[1, 3]),
], ids=lambda c: c.mark)
def test_small_window_equals_independent_dense_and_differs_from_full(arch, cfg):
    ids = _ids()
    full = _logits(make_model(arch), ids)
    got = _logits(apply_swaa(make_model(arch), cfg), ids)
    want = _logits(with_independent(make_model(arch), cfg), ids)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    w = cfg.sliding_window_size
    torch.testing.assert_close(got[:, :w], full[:, :w], atol=2e-5, rtol=1e-4)   # the window covers them
    assert (got[:, w + cfg.keep_first + 1:] - full[:, w + cfg.keep_first + 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ALL)
@pytest.mark.parametrize("cfg", [
    SWAAConfig(sliding_window_size=5, keep_first=2),
    SWAAConfig(sliding_window_size=5, keep_first=2, force_fa_decode=True),
    SWAAConfig(sliding_window_size=3, keep_first=1, force_fa_decode=[0, 2], non_sliding_layers=[3]),
], ids=lambda c: c.mark)
def test_generate_equals_uncached_recomputation(arch, cfg):
    """Greedy generate (KV cache, one query per step) gives the tokens of recomputing the whole sequence at each
    step without a cache, where generated tokens are decode tokens (prompt_length = the prompt)."""
    m = apply_swaa(make_model(arch), cfg)
    ids = _ids(b=1, n=20)
    with torch.no_grad():
        out = m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        seq = ids
        for _ in range(8):
            logits = m(seq, prompt_length=ids.shape[1], use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    assert out.shape == (1, 28)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("arch", ALL)
def test_left_padded_batch_equals_rows_alone(arch):
    cfg = SWAAConfig(sliding_window_size=5, keep_first=2, force_fa_decode=True)
    m = apply_swaa(make_model(arch), cfg)
    rows = [_ids(1, 20, seed=3)[0], _ids(1, 13, seed=4)[0], _ids(1, 7, seed=5)[0]]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = r
        mask[b, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch_logits = m(ids, attention_mask=mask, position_ids=pos).logits
        batch_out = m.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        for b, r in enumerate(rows):
            alone = m(r[None]).logits[0]
            torch.testing.assert_close(batch_logits[b, width - len(r):], alone, atol=3e-5, rtol=1e-4)
            alone_out = m.generate(r[None], max_new_tokens=6, do_sample=False, pad_token_id=0)
            assert torch.equal(batch_out[b, width:], alone_out[0, len(r):]), f"row {b}"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_non_sliding_layers_change_exactly_their_layers(arch):
    ids = _ids()
    swa = SWAAConfig(sliding_window_size=4, keep_first=1)
    mixed = SWAAConfig(sliding_window_size=4, keep_first=1, non_sliding_layers=[2])
    kw = dict(output_hidden_states=True)
    with torch.no_grad():
        h_swa = apply_swaa(make_model(arch), swa)(ids, **kw).hidden_states
        h_mix = apply_swaa(make_model(arch), mixed)(ids, **kw).hidden_states
        h_full = make_model(arch)(ids, **kw).hidden_states
        every = apply_swaa(make_model(arch), SWAAConfig(sliding_window_size=4, non_sliding_layers="FFFF"))
        h_every = every(ids, **kw).hidden_states
    for n in range(3):                                      # embeddings, after layer 0, after layer 1
        torch.testing.assert_close(h_mix[n], h_swa[n])
    assert (h_mix[3] - h_swa[3]).abs().max() > 1e-3       # layer 2 is full attention now
    for a, b in zip(h_every, h_full):                        # every layer listed -> exactly full attention
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ALL)
def test_fa_decode_prefill_is_swa_and_decode_is_full_over_the_swa_cache(arch):
    ids = _ids(b=2, n=24)
    nxt = _ids(b=2, n=1, seed=9)
    fadec = SWAAConfig(sliding_window_size=4, keep_first=2, force_fa_decode=True)
    plain = SWAAConfig(sliding_window_size=4, keep_first=2)
    m = apply_swaa(make_model(arch), fadec)
    with torch.no_grad():
        pre = m(ids, use_cache=True)
        plain_pre = apply_swaa(make_model(arch), plain)(ids).logits
        torch.testing.assert_close(pre.logits, plain_pre)                       # prefill: plain SWA
        step = m(nxt, past_key_values=copy.deepcopy(pre.past_key_values)).logits
        apply_swaa(m, None)                                                     # full attention, same cache
        full_step = m(nxt, past_key_values=copy.deepcopy(pre.past_key_values)).logits
        apply_swaa(m, plain)
        swa_step = m(nxt, past_key_values=copy.deepcopy(pre.past_key_values)).logits
    torch.testing.assert_close(step, full_step)
    assert (step - swa_step).abs().max() > 1e-3


@pytest.mark.parametrize("arch", REQUIRED)
def test_training_split_by_prompt_length_matches_dense_for_a_batch(arch):
    """Rows of one batch with different prompt lengths: prompt tokens under SWA, answer tokens under FA;
    loss, logits and gradients equal the independent dense computation; labels give the same split."""
    cfg = SWAAConfig(sliding_window_size=4, keep_first=1, force_fa_decode=True)
    ids = _ids(b=2, n=30)
    plen = torch.tensor([11, 19])
    labels = ids.clone()
    for b in range(2):
        labels[b, :plen[b]] = -100
    assert torch.equal(prompt_length_from_labels(labels), plen)

    def run(model, **kw):
        model.train()
        model.zero_grad()
        out = model(ids, labels=labels, **kw)
        out.loss.backward()
        grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
        return out.loss.detach(), out.logits.detach(), grad

    loss, logits, grad = run(apply_swaa(make_model(arch), cfg), prompt_length=plen)
    loss2, logits2, grad2 = run(apply_swaa(make_model(arch), cfg))              # derived from the labels
    want_loss, want_logits, want_grad = run(with_independent(make_model(arch), cfg), prompt_length=plen)
    torch.testing.assert_close(logits, want_logits, atol=3e-5, rtol=1e-4)
    torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-5, rtol=1e-4)
    assert torch.equal(logits, logits2) and torch.equal(loss, loss2) and torch.equal(grad, grad2)
    # and the split matters: SWA everywhere gives other logits for the answers
    swa_logits = run(apply_swaa(make_model(arch), SWAAConfig(sliding_window_size=4, keep_first=1)))[1]
    torch.testing.assert_close(swa_logits[0, :11], logits[0, :11], atol=3e-5, rtol=1e-4)
    assert (swa_logits[0, 12:] - logits[0, 12:]).abs().max() > 1e-3


def test_left_padded_labels_count_only_real_prompt_tokens():
    labels = torch.tensor([[-100, -100, -100, -100, 5, 6], [-100, -100, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert prompt_length_from_labels(labels, mask).tolist() == [2, 2]


def test_training_fa_decode_without_prompt_length_is_an_error():
    m = apply_swaa(make_model("llama"), SWAAConfig(sliding_window_size=4, force_fa_decode=True)).train()
    with pytest.raises(ValueError, match="pass prompt_length="):
        m(_ids())


def test_original_way_of_setting_the_config():
    cfg = SWAAConfig(sliding_window_size=5, keep_first=2)
    ids = _ids()
    want = _logits(apply_swaa(make_model("qwen3"), cfg), ids)
    m = make_model("qwen3", attn="swaa")
    m.config.swaa_config = cfg                                   # as the paper's code did
    torch.testing.assert_close(_logits(m, ids), want)
    assert m.config.to_dict()["swaa_config"] == cfg.to_dict()  # and it still serialises


def test_save_pretrained_round_trips_the_config(tmp_path):
    from swaa import load_model
    cfg = SWAAConfig(sliding_window_size=5, keep_first=2, force_fa_decode=[1], non_sliding_layers=[3])
    m = apply_swaa(make_model("llama"), cfg)
    ids = _ids()
    want = _logits(m, ids)
    m.save_pretrained(tmp_path)
    assert '"swaa_config"' in (tmp_path / "config.json").read_text()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="swaa").eval()
    assert SWAAConfig.from_dict(loaded.config.swaa_config) == cfg
    torch.testing.assert_close(_logits(loaded, ids), want)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()   # sdpa; apply from its own config
    apply_swaa(again, again.config.swaa_config)
    torch.testing.assert_close(_logits(again, ids), want)


def test_out_of_range_layers_are_ignored_with_one_warning():
    """As the original code did (the paper's lists name layers up to 47 for 32- and 36-layer models): layers beyond
    the model are ignored, one warning names them, and the mark keeps the config as written."""
    cfg = SWAAConfig(sliding_window_size=4, keep_first=1, non_sliding_layers=[9, 1, 4], force_fa_decode=[7, 0])
    in_range = SWAAConfig(sliding_window_size=4, keep_first=1, non_sliding_layers=[1], force_fa_decode=[0])
    ids = _ids()
    with pytest.warns(UserWarning) as seen:
        m = apply_swaa(make_model("llama"), cfg)
        got = _logits(m, ids)
        out = m.generate(ids[:1, :20], max_new_tokens=4, do_sample=False, pad_token_id=0)
    mine = [str(w.message) for w in seen if "beyond" in str(w.message)]
    assert mine == ["swaa_config swa=4_sink=1_falayer=nonlazy3_from9_fadec: non_sliding_layers [9, 4]; "
                    "force_fa_decode [7] are beyond the 4 layers of llama (indices 0..3) and are ignored, as the "
                    "original code ignored them"]
    ref = apply_swaa(make_model("llama"), in_range)
    torch.testing.assert_close(got, _logits(ref, ids), atol=0, rtol=0)
    assert torch.equal(out, ref.generate(ids[:1, :20], max_new_tokens=4, do_sample=False, pad_token_id=0))
    assert m.config.swaa_config.mark == "swa=4_sink=1_falayer=nonlazy3_from9_fadec"


def test_unsupported_model_is_refused_with_its_name():
    config = transformers.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=2)
    m = transformers.BloomForCausalLM(config)
    with pytest.raises(ValueError, match=r"BloomForCausalLM \(model_type='bloom'\) does not route attention"):
        apply_swaa(m, SWAAConfig(sliding_window_size=4))


def test_native_sliding_window_is_refused_unless_replaced():
    m = make_model("mistral", sliding_window=16)
    with pytest.raises(ValueError, match="config.sliding_window=16"):
        apply_swaa(m, SWAAConfig(sliding_window_size=4))
    apply_swaa(m, SWAAConfig(sliding_window_size=4), replace_native_window=True)
    assert m.config.sliding_window is None
    q = make_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=2)
    with pytest.raises(ValueError, match="2 of its layer_types are not 'full_attention'"):
        apply_swaa(q, SWAAConfig(sliding_window_size=4))


@pytest.mark.parametrize("arch", list(BONUS))
def test_bonus_architectures(arch):
    """Other decoders that route attention through the registry (listed as verified in the README)."""
    ids = _ids()
    ref = _logits(make_model(arch), ids)
    torch.testing.assert_close(_logits(apply_swaa(make_model(arch), SWAAConfig(sliding_window_size=N)), ids), ref,
                               atol=2e-5, rtol=1e-4)
    cfg = SWAAConfig(sliding_window_size=5, keep_first=2)
    got = _logits(apply_swaa(make_model(arch), cfg), ids)
    torch.testing.assert_close(got, _logits(with_independent(make_model(arch), cfg), ids), atol=2e-5, rtol=1e-4)


NATIVE = {"qwen2": dict(use_sliding_window=True, sliding_window=8, max_window_layers=2),   # layers 2, 3 slide
          "qwen3": dict(use_sliding_window=True, sliding_window=8, max_window_layers=2),
          "mistral": dict(sliding_window=8)}


@pytest.mark.parametrize("arch", list(NATIVE))
@pytest.mark.parametrize("cfg", [
    SWAAConfig(sliding_window_size=5, keep_first=2),
    SWAAConfig(sliding_window_size=6, non_sliding_layers=[1, 2]),
    SWAAConfig(sliding_window_size=5, keep_first=1, force_fa_decode=True),
], ids=lambda c: c.mark)
def test_replaced_native_window_equals_the_same_weights_without_one(arch, cfg):
    """A model built with its own window (the modules cache it at construction) runs under replace_native_window
    exactly as its weights loaded into a model built without one: logits, and greedy tokens through generate."""
    native = make_model(arch, seed=5, **NATIVE[arch])
    assert native.config.sliding_window == 8
    plain = make_model(arch, seed=6)
    plain.load_state_dict(native.state_dict())
    apply_swaa(native, cfg, replace_native_window=True)
    apply_swaa(plain, cfg)
    ids = _ids(b=2, n=30)
    torch.testing.assert_close(_logits(native, ids), _logits(plain, ids), atol=1e-5, rtol=0)
    with torch.no_grad():
        out = [m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0) for m in (native, plain)]
    assert torch.equal(out[0], out[1])
