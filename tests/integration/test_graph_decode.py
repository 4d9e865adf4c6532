"""GraphDecoder and StaticDecodeCache on CPU: the static step (the one a CUDA graph replays on GPU, run eagerly
here) must decode what model.generate decodes under SWAA, for every kind of layer: rings (windowed decode, with
and without sinks, short prompts that leave slots empty), linear buffers (full attention, FA decode,
non-sliding layers), from an evicting cache or a cache that kept everything. tests/gpu replays it as a graph."""
import pytest
import torch
from transformers import DynamicCache

from swaa import SWAAConfig, apply_swaa
from swaa.integrations.cuda_graph_decode import GraphDecoder, StaticDecodeCache
from tests.integration.tiny_models import VOCAB, make_model

CFGS = [SWAAConfig(), SWAAConfig(sliding_window_size=8, keep_first=3),
        SWAAConfig(sliding_window_size=8, keep_first=3, force_fa_decode=True),
        SWAAConfig(sliding_window_size=8, keep_first=3, non_sliding_layers=[1]),
        SWAAConfig(sliding_window_size=6, keep_first=20), SWAAConfig(sliding_window_size=1)]


def _prefill(model, ids):
    with torch.no_grad():
        out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[:, -1:].argmax(-1)


def _check(model, ids, steps=9, **kw):
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=steps + 1, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    cache, tok = _prefill(model, ids)
    dec = GraphDecoder(model, cache, tok, steps, **kw)
    logits = []
    for _ in range(steps):
        dec.step()
        logits.append(dec.logits.clone())
    n = ids.shape[1]
    assert torch.equal(torch.cat([tok, dec.tokens()], 1), ref.sequences[:, n:])
    torch.testing.assert_close(torch.stack(logits), torch.stack(ref.logits[1:]), atol=1e-4, rtol=1e-4)
    return dec


# (arch, prompt length, evicting cache); MoE once: its attention layers are the same
RUNS = [(a, n, e) for a in ("qwen3", "llama") for n in (40, 5, 12) for e in (True, False)] + [("qwen3_moe", 40, True)]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.mark)
@pytest.mark.parametrize("arch, n, evict", RUNS, ids=lambda x: str(x))
def test_static_steps_decode_what_generate_does(arch, n, evict, cfg):
    model = make_model(arch).eval()
    apply_swaa(model, cfg, kv_eviction=evict)
    ids = torch.randint(3, VOCAB, (2, n), generator=torch.Generator().manual_seed(n))
    dec = _check(model, ids)
    assert dec.graph is None and dec.reason                    # CPU: the same step, eagerly
    kinds = [l.kind for l in dec.cache.layers]
    if cfg.sliding_window_size is None or cfg.force_fa_decode:
        assert kinds == ["linear"] * len(kinds)
    else:
        assert kinds.count("ring") == len(kinds) - len(cfg.non_sliding_layers or [])
        s, w = cfg.keep_first, cfg.sliding_window_size
        ring = dec.cache.layers[kinds.index("ring")]
        assert ring.keys.shape[-2] == s + w                    # sinks + window, whatever the prompt length
        assert (ring.valid is None) == (n + 1 >= s + w)        # a mask only while a short prompt leaves slots empty


def test_linear_layers_through_the_triton_kernel_with_a_device_length():
    """kernel="triton": full-attention layers read their valid length on the device (interpreter here)."""
    from swaa.attention import available_backends
    if available_backends()["triton"] is not None:
        pytest.skip(f"triton backend unavailable: {available_backends()['triton']}")
    model = make_model("qwen3").eval()
    apply_swaa(model, SWAAConfig(sliding_window_size=8, keep_first=3, force_fa_decode=True))
    ids = torch.randint(3, VOCAB, (1, 30), generator=torch.Generator().manual_seed(3))
    _check(model, ids, steps=4, kernel="triton")


def test_bad_uses_name_the_fix():
    model = make_model("llama").eval()
    ids = torch.randint(3, VOCAB, (1, 12))
    cache, tok = _prefill(model, ids)
    with pytest.raises(ValueError, match="apply_swaa"):
        GraphDecoder(model, cache, tok, 4)                      # attention not in the swaa registry entry
    apply_swaa(model, SWAAConfig(sliding_window_size=4))
    cache, tok = _prefill(model, ids)
    with pytest.raises(ValueError, match="graph=True needs a CUDA model"):
        GraphDecoder(model, cache, tok, 4, graph=True)
    with pytest.raises(ValueError, match="next_token"):
        GraphDecoder(model, cache, tok[:, 0], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        StaticDecodeCache.from_cache(cache, model.config, 0)
    with pytest.raises(ValueError, match="prefill"):
        StaticDecodeCache.from_cache(DynamicCache(config=model.config), model.config, 4)
    dec = GraphDecoder(model, cache, tok, 2)
    dec.step(), dec.step()
    with pytest.raises(RuntimeError, match="max_new_tokens=2"):
        dec.step()
    padded = torch.ones(2, 12, dtype=torch.long)
    padded[0, :3] = 0
    with torch.no_grad():
        out = model(torch.cat([ids, ids]), attention_mask=padded, past_key_values=DynamicCache(config=model.config),
                    use_cache=True)
    with pytest.raises(ValueError, match="padd"):
        StaticDecodeCache.from_cache(out.past_key_values, model.config, 4)
