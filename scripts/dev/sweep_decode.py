"""Developer sweep (GPU): decode kernel configs at 128k (SWAA_TRITON_DECODE overrides)."""
import json, os, statistics
import torch
from swaa.attention import swaa_attention
res = []
k = torch.randn(1, 8, 131072, 128, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
for cfg in ["64,4,3,2", "128,4,3,2", "128,8,3,4", "64,4,4,4", "128,4,2,8", "256,8,2,4", "64,2,4,8"]:
    os.environ["SWAA_TRITON_DECODE"] = cfg
    f = lambda: swaa_attention(q, k, v, backend="triton")
    with torch.no_grad():
        for _ in range(5): f()
        torch.cuda.synchronize(); ts = []
        for _ in range(30):
            a, b = torch.cuda.Event(True), torch.cuda.Event(True); a.record(); f(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    ms = statistics.median(ts); r = dict(cfg=cfg, ms=round(ms, 4), gbps=round(2 * 131072 * 8 * 128 * 2 / ms / 1e6)); res.append(r); print(r, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "decode_sweep.json"), "w"), indent=1)
