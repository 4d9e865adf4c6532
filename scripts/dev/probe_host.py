"""Developer probe (GPU), session 9: where the host's time per forward+backward goes (cProfile over calls of the
Triton path at a small shape, whose GPU work is shorter than the host's), sorted by own time and by cumulative
time. Writes $OUT/probe_host.txt. Not a test."""
import cProfile
import io
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from swaa.attention import swaa_attention

out = open(os.path.join(os.environ.get("OUT", "."), "probe_host.txt"), "w")
mk = lambda h: torch.randn(1, h, 2048, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
q, k, v = mk(32), mk(8), mk(8)
do = torch.randn_like(q)
for be in ("triton", "flex"):
    fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=512, keep_first=100, backend=be),
                                     (q, k, v), do)
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50):
        fn()
    host = (time.perf_counter() - t) / 50 * 1e3
    torch.cuda.synchronize()
    print(f"{be}: host {host:.3f} ms per forward+backward", file=out, flush=True)
    if be == "triton":
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(50):
            fn()
        pr.disable()
        torch.cuda.synchronize()
        for key in ("tottime", "cumulative"):
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats(key).print_stats(45)
            print(s.getvalue(), file=out, flush=True)
out.close()
