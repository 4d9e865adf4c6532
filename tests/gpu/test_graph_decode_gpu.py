"""GPU tier: GraphDecoder replaying CUDA graphs must decode what model.generate decodes, and the split-KV decode
kernel with a device-side length must match attention_ref. Skipped without CUDA."""
import pytest
import torch
from transformers import DynamicCache

from swaa import SWAAConfig, apply_swaa
from swaa.attention import attention_ref
from swaa.integrations.cuda_graph_decode import GraphDecoder
from swaa.integrations.transformers import compile_blocks
from tests.conftest import assert_close_to_ref
from tests.integration.tiny_models import VOCAB, make_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA; GPU results are committed under benchmarks/results/")


@pytest.mark.parametrize("length, cap, lq, d", [(1, 64, 1, 64), (4099, 8192, 1, 128), (777, 777, 1, 128),
                                                (5000, 131072, 1, 128), (300, 1000, 4, 64)])
def test_decode_kernel_with_device_length(length, cap, lq, d):
    from swaa.attention.triton import triton_decode
    q = torch.randn(2, 8, lq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, cap, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = triton_decode(q, k, v, kv_len=torch.tensor([length], device="cuda"))
    kw = dict()
    assert_close_to_ref(out, attention_ref(q, k[:, :, :length], v[:, :, :length], **kw),
                        attention_ref(q, k[:, :, :length], v[:, :, :length], upcast=False, **kw))


@pytest.mark.parametrize("cfg", [SWAAConfig(), SWAAConfig(sliding_window_size=8, keep_first=3),
                                 SWAAConfig(sliding_window_size=8, keep_first=3, force_fa_decode=True),
                                 SWAAConfig(sliding_window_size=8, keep_first=3, non_sliding_layers=[1]),
                                 SWAAConfig(sliding_window_size=16, keep_first=20)], ids=lambda c: c.mark)
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager-blocks", "compiled-blocks"])
def test_graph_replay_decodes_what_generate_does(arch, cfg, compiled):
    model = make_model(arch).eval().cuda()
    apply_swaa(model, cfg)
    if compiled:
        compile_blocks(model)
    for n in (40, 9):
        ids = torch.randint(3, VOCAB, (2, n), generator=torch.Generator().manual_seed(n)).cuda()
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=11, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
            out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        dec = GraphDecoder(model, out.past_key_values, tok, 10, graph=True)
        assert dec.graph is not None
        warm = dec.done                       # the eager warm-up steps before the capture count as decoded tokens
        assert 0 < warm < 10
        logits = []
        while dec.done < 10:                  # the rest are graph replays
            dec.step()
            logits.append(dec.logits.clone())
        assert torch.equal(torch.cat([tok, dec.tokens()], 1), ref.sequences[:, n:])
        # ref.logits[j] chose token j of the 11 (0: the prefill's); replay i made token warm + 1 + i
        torch.testing.assert_close(torch.stack(logits), torch.stack(ref.logits[warm + 1:]), atol=2e-4, rtol=2e-4)


def test_a_step_that_syncs_is_never_captured(monkeypatch):
    """A step that waits on the host is caught by the probe step before any capture (a failed capture would leave
    the CUDA RNG unusable): graph=None decodes eagerly with the reason, graph=True names it, and CUDA still works."""
    from swaa.integrations.cuda_graph_decode import StaticDecodeLayer
    model = make_model("llama").eval().cuda()
    apply_swaa(model, SWAAConfig(sliding_window_size=8, keep_first=3))
    ids = torch.randint(3, VOCAB, (1, 30), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=6, do_sample=False)
    attend = StaticDecodeLayer.attend
    monkeypatch.setattr(StaticDecodeLayer, "attend", lambda self, q, scale: attend(self, q, scale) * bool(q.sum() != 0))

    def prefill():
        with torch.no_grad():
            out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1:].argmax(-1)

    cache, tok = prefill()
    dec = GraphDecoder(model, cache, tok, 5)
    assert dec.graph is None and "synchronises with the host" in dec.reason
    while dec.done < 5:
        dec.step()
    assert torch.equal(torch.cat([tok, dec.tokens()], 1), ref[:, 30:])
    cache, tok = prefill()
    with pytest.raises(RuntimeError, match="synchronises with the host"):
        GraphDecoder(model, cache, tok, 5, graph=True)
    torch.randn(4, device="cuda").sum().item()           # the RNG and the stream are still usable
