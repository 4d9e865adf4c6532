"""Developer sweep (GPU), session 3: forward with K tiles loaded (BN, D) and transposed (KT=1) vs (D, BN), block
configs, against Flex on the same inputs; decode configs timed with queued launches (benchmarks.attention.timeit)."""
import json, os, sys
import torch
sys.path.insert(0, os.getcwd())
from benchmarks.attention import timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T

out = os.environ.get("OUT", ".")
res = []
def save():
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": __import__("triton").__version__,
               "rows": res}, open(os.path.join(out, "sweep_session3.json"), "w"), indent=1)
w, s = 2048, 100
for n in (32768, 131072):
    hq, hkv, d = 32, 8, 128
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    pairs = visible_pairs(n, n, w, s)
    with torch.no_grad():
        ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="flex"))
    r = dict(kind="fwd", n=n, backend="flex", ms=round(ms, 3), tflops=round(4 * pairs * d * hq / ms / 1e9, 1)); res.append(r); print(r, flush=True)
    ref = swaa_attention(q[:, :, -512:], k, v, sliding_window_size=w, keep_first=s, backend="flex")
    for kt in (0, 1):
        T._FWD_KT = kt
        for cfg in ["128,64,8,3", "128,128,8,2", "128,128,8,3", "128,64,4,3", "128,128,4,2", "64,128,4,3", "128,64,8,4", "256,64,8,2"]:
            os.environ["SWAA_TRITON_FWD"] = cfg
            try:
                with torch.no_grad():
                    o = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
                    err = (o[:, :, -512:].float() - ref.float()).abs().max().item()
                    ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
                r = dict(kind="fwd", n=n, kt=kt, cfg=cfg, ms=round(ms, 3), tflops=round(4 * pairs * d * hq / ms / 1e9, 1), max_err_vs_flex=err)
            except Exception as e:
                r = dict(kind="fwd", n=n, kt=kt, cfg=cfg, error=str(e)[:160])
            res.append(r); print(r, flush=True); save()
    os.environ.pop("SWAA_TRITON_FWD"); T._FWD_KT = 0
    del q, k, v
# decode: queued-launch timing, configs
bw = None
x = torch.empty(1 << 30, dtype=torch.bfloat16, device="cuda"); y = torch.empty_like(x)
ms = timeit(lambda: y.copy_(x)); bw = 2 * x.numel() * 2 / ms / 1e6; del x, y
res.append(dict(kind="copy", gbps=round(bw))); print(res[-1], flush=True)
for n in (32768, 131072):
    k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    for cfg in [None, "128,4,3,2", "64,4,3,2", "64,4,2,4", "64,4,3,4", "32,4,4,4", "64,8,3,2", "128,8,2,2", "64,4,3,3", "128,4,2,3"]:
        if cfg: os.environ["SWAA_TRITON_DECODE"] = cfg
        with torch.no_grad():
            ms = timeit(lambda: swaa_attention(q, k, v, backend="triton"), reps=30)
        gb = 2 * n * 8 * 128 * 2 / ms / 1e6
        r = dict(kind="decode_fa", n=n, cfg=cfg or "default", ms=round(ms, 4), gbps=round(gb), frac_copy=round(gb / bw, 3)); res.append(r); print(r, flush=True)
        os.environ.pop("SWAA_TRITON_DECODE", None)
    for ww in (2048,):
        with torch.no_grad():
            ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=ww, keep_first=100, backend="triton"), reps=30)
        r = dict(kind="decode_window", n=n, ms=round(ms, 4)); res.append(r); print(r, flush=True)
    save()
save()
