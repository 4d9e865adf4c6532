"""Developer diagnostic (GPU), session 6: where the Triton kernels' time goes, with no new variant.

1. Forward time against the window at 32k (Qwen3-4B heads, S=0, and full causal through our kernel): a straight
   line through time per query block against key blocks visited gives the per-block cost and the fixed cost of
   a program (Q load, pipeline fill and drain, masked edge blocks, epilogue).
2. The backward's split between its two kernels (dK/dV and dQ) and the delta/LSE preamble, from the profiler.
Writes $OUT/sweep_session6.json; prints a table. Not a test."""
import json, os, sys
import torch
sys.path.insert(0, os.getcwd())
from benchmarks.attention import kernel_times, timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs

out = os.environ.get("OUT", ".")
res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=__import__("triton").__version__,
           fwd_vs_window=[], backward_kernels=[])
save = lambda: json.dump(res, open(os.path.join(out, "sweep_session6.json"), "w"), indent=1)
n, hq, hkv, d, bm, bn = 32768, 32, 8, 128, 64, 64
q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
v = torch.randn_like(k)
with torch.no_grad():
    for w in (256, 512, 1024, 2048, 4096, 8192, 16384, None):
        ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=0, backend="triton"))
        pairs = visible_pairs(n, n, w, 0)
        # key blocks a query block visits (window rounded out to blocks, + the diagonal block), averaged
        blocks = sum(-(-(m + bm - max(m - (w or n) + 1, 0) // bn * bn) // bn) for m in range(0, n, bm)) / (n // bm)
        r = dict(window=w, ms=round(ms, 4), tflops=round(4 * pairs * d * hq / ms / 1e9, 1), blocks=round(blocks, 2))
        res["fwd_vs_window"].append(r); print(r, flush=True)
    save()
    rows = [r for r in res["fwd_vs_window"] if r["window"] and r["window"] <= 8192]
    import statistics
    xs, ys = [r["blocks"] for r in rows], [r["ms"] * 1e3 / (n // bm * hq) * (132 * 2) for r in rows]  # us per program per slot
    fit = statistics.linear_regression(xs, ys)
    res["fit_us_per_program"] = dict(per_block=round(fit.slope, 4), fixed=round(fit.intercept, 4),
                                     fixed_in_blocks=round(fit.intercept / fit.slope, 2))
    print("fit", res["fit_us_per_program"], flush=True)
    save()
for w, s in ((2048, 100), (4096, 100)):
    qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
    o = swaa_attention(qq, kk, vv, sliding_window_size=w, keep_first=s, backend="triton")
    g = torch.randn_like(o)
    bwd = lambda: torch.autograd.grad(o, (qq, kk, vv), g, retain_graph=True)
    ms = timeit(bwd)
    r = dict(window=w, keep_first=s, backward_ms=round(ms, 3), kernels_ms=kernel_times(bwd))
    res["backward_kernels"].append(r); print(r, flush=True)
    save()
