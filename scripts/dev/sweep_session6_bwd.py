"""Developer sweep (GPU), session 6: forward+backward with the dK/dV kernel's sink split against the one program
per key block that came before it (SWAA_TRITON_SINK_SPLIT=0 path), without sinks, and Flex, in one run; plus the
split kernels' errors against the unsplit ones. Writes $OUT/sweep_session6_bwd.json. Not a test."""
import json, os, sys, time
import torch
sys.path.insert(0, os.getcwd())
from benchmarks.attention import timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T

out = os.environ.get("OUT", ".")
res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=__import__("triton").__version__,
           note="fwd+bwd median ms (benchmarks.attention.timeit); tflops = 10*pairs*D*H/t", rows=[])
save = lambda: json.dump(res, open(os.path.join(out, "sweep_session6_bwd.json"), "w"), indent=1)
t_end = time.time() + float(os.environ.get("SWEEP_BUDGET_S", "140"))
plan = [("qwen3-4b", 32768, 32, 8, 128), ("smollm2", 32768, 9, 3, 64), ("qwen3-4b", 131072, 32, 8, 128)]
for name, n, hq, hkv, d in plan:
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    variants = [("triton", 2048, 100, True), ("triton", 2048, 100, False), ("triton", 2048, 0, True),
                ("triton", 4096, 100, True), ("triton", 4096, 100, False)]
    if n == 32768:
        variants.append(("flex", 2048, 100, True))
    base = None
    for be, w, s, split in variants:
        if time.time() > t_end:
            break
        T._SINK_SPLIT = split
        fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be),
                                         (q, k, v), do)
        try:
            g = fn()
            err = None
            if be == "triton" and s and w == 2048:
                if split:
                    base = g
                elif base is not None:       # split vs unsplit: only the summation order differs
                    err = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                              for a, b in zip(base, g))
            ms = timeit(fn)
            pairs = visible_pairs(n, n, w, s)
            r = dict(shape=name, n=n, backend=be, window=w, keep_first=s, sink_split=split, ms=round(ms, 3),
                     tflops=round(10 * pairs * d * hq / ms / 1e9, 1), rel_diff_vs_split=err)
        except Exception as e:
            r = dict(shape=name, n=n, backend=be, window=w, keep_first=s, sink_split=split, error=str(e)[-300:])
        res["rows"].append(r); print(r, flush=True); save()
    T._SINK_SPLIT = True
    del q, k, v, do, base
    torch.cuda.empty_cache()
save()
