"""FlexAttention compiled on CPU (inference): the path `auto`-compiled flex takes for long CPU inputs."""
import pytest
import torch

from swaa.attention import attention_ref, swaa_attention
from swaa.attention import flex as flex_mod


@pytest.mark.slow
def test_compiled_flex_on_cpu_matches_reference():
    assert flex_mod._should_compile(torch.empty(1, 1, 2048, 8), torch.empty(1, 1, 2048, 8), False)
    q = torch.randn(1, 6, 2048, 64)
    k = torch.randn(1, 2, 2048, 64)
    v = torch.randn(1, 2, 2048, 64)
    for w, s in ((256, 4), (100, 300)):
        with torch.no_grad():
            out = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="flex")
        ref = attention_ref(q, k, v, sliding_window_size=w, keep_first=s)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
