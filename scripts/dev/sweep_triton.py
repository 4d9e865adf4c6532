"""Developer sweep (GPU): time the Triton kernels under several block configs (SWAA_TRITON_* overrides)."""
import json, os, statistics, sys
import torch
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs

def timeit(fn, reps=10):
    for _ in range(3): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True); a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

res = []
n, w, s = 32768, 2048, 100
for (hq, hkv, d) in [(32, 8, 128), (9, 3, 64)]:
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    pairs = visible_pairs(n, n, w, s)
    fwd_cfgs = ["128,64,4,3", "128,64,8,3", "128,128,8,3", "128,128,8,2", "64,64,4,3", "128,32,4,3", "64,128,4,2", "128,64,8,4"]
    for cfg in fwd_cfgs:
        os.environ["SWAA_TRITON_FWD"] = cfg
        try:
            with torch.no_grad():
                ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
            r = dict(kind="fwd", d=d, cfg=cfg, ms=round(ms, 3), tflops=round(4 * pairs * d * hq / ms / 1e9, 1))
        except Exception as e:
            r = dict(kind="fwd", d=d, cfg=cfg, error=str(e)[:150])
        res.append(r); print(r, flush=True)
    os.environ.pop("SWAA_TRITON_FWD")
    do = torch.randn_like(q)
    for dkdv, dq in [("32,128,8,2", "128,32,8,2"), ("64,64,4,3", "64,64,4,3"), ("32,64,4,3", "64,32,4,3"), ("64,128,8,2", "128,64,8,2"), ("32,128,4,3", "128,32,4,3"), ("64,64,8,2", "64,64,8,2")]:
        os.environ["SWAA_TRITON_DKDV"], os.environ["SWAA_TRITON_DQ"] = dkdv, dq
        def fb():
            o = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
            torch.autograd.grad(o, (q, k, v), do)
        try:
            ms = timeit(fb)
            r = dict(kind="fwdbwd", d=d, cfg=f"{dkdv}|{dq}", ms=round(ms, 3), tflops=round(10 * pairs * d * hq / ms / 1e9, 1))
        except Exception as e:
            r = dict(kind="fwdbwd", d=d, cfg=f"{dkdv}|{dq}", error=str(e)[:150])
        res.append(r); print(r, flush=True)
    os.environ.pop("SWAA_TRITON_DKDV"); os.environ.pop("SWAA_TRITON_DQ")
# decode after the in-kernel ranges + merge kernel
for n in (32768, 131072):
    k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    for ww, ss in [(None, 0), (2048, 100)]:
        with torch.no_grad():
            ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=ww, keep_first=ss, backend="triton"), reps=30)
        keys = n if ww is None else ww + ss
        r = dict(kind="decode", n=n, window=ww, ms=round(ms, 4), gbps=round(2 * keys * 8 * 128 * 2 / ms / 1e6, 1)); res.append(r); print(r, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "sweep.json"), "w"), indent=1)
