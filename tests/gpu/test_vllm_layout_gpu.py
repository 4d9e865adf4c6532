"""GPU tier: the vLLM plugin's CUDA layout with the real kernel. One step of windowed rows (a first prefill chunk, a
later chunk, decode rows, a one-token chunk) gathered from vLLM's CUDA pages ([K | V] rows per token and head),
renumbered per request and attended in one call of our Triton ``swaa_attention_varlen``, against attention_ref of
each request alone. vLLM itself is not needed (the GPU machines have no vLLM build); on CPU the same layout runs
with the reference standing in for the kernel (tests/unit/test_vllm_rules.py).
"""
import pytest
import torch

from swaa.config import SWAAConfig
from swaa.integrations.vllm import step
from swaa.integrations.vllm.attend import attend_packed
from tests.unit.test_vllm_rules import _batch, _expected

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA; GPU results are committed under benchmarks/results/")

BS = 16
# requests: a first chunk of 300, a later chunk of 129 at 517, decode rows at 1,000 and 3, a one-token prefill chunk
LENS, Q_LENS, PREFILLING = [300, 517, 1000, 3, 77], [300, 129, 1, 1, 1], [True, True, False, False, True]
CONFIGS = [
    SWAAConfig(sliding_window_size=64, keep_first=4),
    SWAAConfig(sliding_window_size=1, keep_first=0),
    SWAAConfig(sliding_window_size=32, keep_first=100),                   # sinks larger than the window
    SWAAConfig(sliding_window_size=128, keep_first=4, force_fa_decode=True),
    SWAAConfig(sliding_window_size=4096, keep_first=0),                   # window longer than the sequences
]


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.mark)
def test_cuda_layout_with_the_triton_varlen_kernel(cfg, dtype, d):
    from swaa.attention.triton import swaa_attention_varlen
    plan = cfg.layer(0)
    seqs, pages, table, q, qsl, seq = _batch(LENS, Q_LENS, hq=8, hkv=2, d=d, seed=2, cuda=True, bs=BS, nb=160)
    pre = torch.tensor(PREFILLING)
    use = pre if plan.fa_decode else torch.ones_like(pre)
    seg = step.segments(qsl, seq, use, plan.window, plan.keep_first)
    p = step.packed(seg, table.cuda(), BS)
    qc = q.to("cuda", dtype)
    out = torch.full_like(qc, float("nan"))
    attend_packed(qc, pages.to("cuda", dtype), p, plan.window, plan.keep_first, d ** -0.5, out,
                  swaa_attention_varlen)
    rows = torch.repeat_interleave(use, qsl[1:] - qsl[:-1]).cuda()
    # the reference on the values the kernel saw (rounded to dtype), in float64
    rounded = [(k.to(dtype).double(), v.to(dtype).double()) for k, v in seqs]
    expect = _expected(rounded, q.to(dtype).double(), qsl, plan, [not x for x in PREFILLING]).cuda()
    torch.testing.assert_close(out[rows].double(), expect[rows], atol=2e-2, rtol=2e-2)
    assert out[~rows].isnan().all()
