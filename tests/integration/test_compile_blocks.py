"""compile_blocks: the norms, MLPs and rotary table under torch.compile (inductor on CPU), attention eager.

The compiled model must generate what the eager one does under SWAA with eviction, share one graph per module
type across the layers (no per-layer recompilation), and go back to eager on request."""
import pytest
import torch
from torch._dynamo.utils import counters

from swaa import SWAAConfig, apply_swaa
from swaa.integrations.transformers import compile_blocks
from tests.integration.tiny_models import VOCAB, make_model

pytestmark = pytest.mark.slow


def _generate(model, ids, n=6):
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen3_moe"])
def test_compiled_blocks_generate_what_eager_does(arch):
    torch._dynamo.reset()
    counters.clear()
    model = make_model(arch, num_hidden_layers=6).eval()
    apply_swaa(model, SWAAConfig(sliding_window_size=8, keep_first=2, force_fa_decode=True))
    ids = torch.randint(3, VOCAB, (1, 40), generator=torch.Generator().manual_seed(1))
    seq_eager, logits_eager = _generate(model, ids)
    names = compile_blocks(model)
    kinds = {type(m).__name__ for n, m in model.named_modules() if n in names}
    assert any(k.endswith("RMSNorm") for k in kinds) and any(k.endswith("RotaryEmbedding") for k in kinds)
    if arch != "qwen3_moe":          # the MoE block's routing stays eager; dense models compile their MLPs
        assert any(k.endswith("MLP") for k in kinds)
    assert len(names) >= 2 * 6 + 1
    seq, logits = _generate(model, ids)
    torch.testing.assert_close(logits, logits_eager, atol=1e-4, rtol=1e-4)
    assert torch.equal(seq, seq_eager)
    _generate(model, ids[:, :29], n=3)                  # another length: shape-generic graphs, not one per length
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs <= 4 * len(kinds), f"{graphs} graphs for {len(kinds)} module types: recompiled per layer?"
    assert sum(counters["graph_break"].values()) == 0
    compile_blocks(model, enabled=False)
    assert all(getattr(m, "_compiled_call_impl", None) is None for n, m in model.named_modules() if n in names)
    _, logits_back = _generate(model, ids)
    torch.testing.assert_close(logits_back, logits_eager, atol=1e-5, rtol=1e-5)


def test_model_without_known_blocks_is_refused():
    with pytest.raises(ValueError, match="compile_blocks"):
        compile_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
