"""Developer sweep (GPU), session 4: forward with TMA descriptors (and the warp-specialised interior loop) against
the pointer kernel and Flex, block configs, both dense layouts; then a profile of an end-to-end prefill/decode of
the Qwen3-4B shape with and without the evicting cache. Writes $OUT/sweep_session4.json and profile text."""
import json, os, sys, time, traceback
import torch
sys.path.insert(0, os.getcwd())
from benchmarks.attention import timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T

out = os.environ.get("OUT", ".")
res = []
def save():
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "triton": __import__("triton").__version__, "rows": res},
              open(os.path.join(out, "sweep_session4.json"), "w"), indent=1)
def rec(**r):
    res.append(r); print(r, flush=True); save()

w, s = 2048, 100
PART = os.environ.get("PART", "fwd,prof")
if "fwd" in PART:
  for (n, hq, hkv, d) in [(32768, 32, 8, 128), (131072, 32, 8, 128), (32768, 9, 3, 64)]:
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    pairs = visible_pairs(n, n, w, s)
    tf = lambda ms: round(4 * pairs * d * hq / ms / 1e9, 1)
    with torch.no_grad():
        for _ in range(2):
            ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="flex"))
            rec(kind="fwd", n=n, d=d, backend="flex", ms=round(ms, 3), tflops=tf(ms))
        T._TMA = False
        ref = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
        ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
        rec(kind="fwd", n=n, d=d, variant="pointer", cfg="default", ms=round(ms, 3), tflops=tf(ms))
        T._TMA = True
    cfgs = os.environ.get("CFGS", "128,64,8,2 128,64,8,3 128,64,8,4 128,64,8,5 128,128,8,2 128,128,8,3 64,128,4,2 "
                          "64,128,4,3 64,64,4,3 64,64,4,4").split()
    wscfgs = os.environ.get("WSCFGS", "128,64,8,3 128,64,8,4 128,128,8,2").split()
    if n == 131072:
        cfgs = os.environ.get("CFGS128", "128,64,8,3 128,64,8,4 128,128,8,2 128,128,8,3").split()
    if d == 64:
        cfgs = os.environ.get("CFGS64", "128,64,4,3 64,64,4,3 128,128,8,2 128,64,8,3 64,128,4,3").split()
    for ws in (0, 1):
        T._WS_FWD = bool(ws)
        for cfg in (cfgs if ws == 0 else [c for c in cfgs if c in wscfgs]):
            cfg, _, nreg = cfg.partition("r")
            T._MAXNREG = {"maxnreg": int(nreg)} if nreg else {}
            os.environ["SWAA_TRITON_FWD"] = cfg
            try:
                with torch.no_grad():
                    o = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
                    err = (o.float() - ref.float()).abs().max().item()
                    ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
                L = T.LAST_FWD_LAUNCH
                res_use = dict(regs=getattr(L, "n_regs", None), spills=getattr(L, "n_spills", None),
                               smem=getattr(getattr(L, "metadata", None), "shared", None))
                rec(kind="fwd", n=n, d=d, variant="tma", ws=ws, cfg=cfg, maxnreg=nreg, ms=round(ms, 3), tflops=tf(ms), err=err, **res_use)
            except Exception as e:
                rec(kind="fwd", n=n, d=d, variant="tma", ws=ws, cfg=cfg, error=str(e)[-300:])
    T._WS_FWD = False
    T._MAXNREG = {}
    os.environ.pop("SWAA_TRITON_FWD", None)
    # the HF layout: (B, L, H, D) transposed to (B, H, L, D)
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    with torch.no_grad():
        ms = timeit(lambda: swaa_attention(qt, kt, vt, sliding_window_size=w, keep_first=s, backend="triton"))
        o = swaa_attention(qt, kt, vt, sliding_window_size=w, keep_first=s, backend="triton")
    rec(kind="fwd", n=n, d=d, variant="tma_blhd", cfg="default", ms=round(ms, 3), tflops=tf(ms),
        err=(o.float() - ref.float()).abs().max().item())
    del q, k, v, qt, kt, vt, ref
    torch.cuda.empty_cache()

if "lazy" in PART:
    for (n, hq, hkv, d) in [(32768, 32, 8, 128), (131072, 32, 8, 128), (32768, 9, 3, 64)]:
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        pairs = visible_pairs(n, n, w, s)
        with torch.no_grad():
            outs = {}
            for lazy in (False, True, False, True):
                T._LAZY_FWD = lazy
                outs[lazy] = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
                ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
                rec(kind="fwd", n=n, d=d, variant="lazy" if lazy else "default", ms=round(ms, 3),
                    tflops=round(4 * pairs * d * hq / ms / 1e9, 1),
                    err=(outs[lazy].float() - outs[False].float()).abs().max().item())
        T._LAZY_FWD = False
        del q, k, v
    torch.cuda.empty_cache()

if "bwd" in PART:
    n, hq, hkv, d = 32768, 32, 8, 128
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    pairs = visible_pairs(n, n, w, s)
    tf = lambda ms: round(4 * pairs * d * hq * 3.5 / ms / 1e9, 1)        # fwd 2 matmuls + bwd 5
    def fb(backend):
        out = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=backend)
        return torch.autograd.grad(out, (q, k, v), do)
    for _ in range(2):
        ms = timeit(lambda: fb("flex"))
        rec(kind="fwdbwd", n=n, d=d, backend="flex", ms=round(ms, 3), tflops=tf(ms))
    T._TMA = False
    os.environ["SWAA_TRITON_FWD"] = "128,64,8,3"
    ref = fb("triton")
    ms = timeit(lambda: fb("triton"))
    rec(kind="fwdbwd", n=n, d=d, variant="pointer_session3", ms=round(ms, 3), tflops=tf(ms))
    T._TMA = True
    os.environ.pop("SWAA_TRITON_FWD")
    with torch.no_grad():
        fms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton"))
    rec(kind="fwd", n=n, d=d, variant="tma_default", ms=round(fms, 3))
    combos = os.environ.get("BWD", "32,64,4,3|64,32,4,3 64,64,4,3|64,64,4,3 64,64,4,2|64,64,4,2 32,64,4,2|64,32,4,2 "
                            "64,128,8,2|128,64,8,2 32,128,4,2|64,64,4,3 64,64,4,3|64,32,4,3 32,64,4,3|128,64,8,2 "
                            "64,64,8,2|64,64,4,3 32,32,4,3|64,32,4,3").split()
    for combo in combos:
        a, bq = combo.split("|")
        os.environ["SWAA_TRITON_DKDV"], os.environ["SWAA_TRITON_DQ"] = a, bq
        try:
            got = fb("triton")
            err = max((x.float() - y.float()).abs().max().item() for x, y in zip(got, ref))
            ms = timeit(lambda: fb("triton"))
            rec(kind="fwdbwd", n=n, d=d, variant="tma", cfg=combo, ms=round(ms, 3), bwd_ms=round(ms - fms, 3),
                tflops=tf(ms), err=err)
        except Exception as e:
            rec(kind="fwdbwd", n=n, d=d, variant="tma", cfg=combo, error=str(e)[-300:])
    os.environ.pop("SWAA_TRITON_DKDV", None); os.environ.pop("SWAA_TRITON_DQ", None)
    del q, k, v, do, ref
    torch.cuda.empty_cache()

if "prof" in PART:
    from torch.profiler import profile, ProfilerActivity
    from swaa.config import SWAAConfig
    from swaa.speed.costmodel import get_shape
    from swaa.speed.measure import build_random_model, _prefill, random_prompt_ids
    from swaa.integrations.transformers import apply_swaa
    shape = get_shape("qwen3-4b")
    model = build_random_model(shape, device="cuda")
    ids = random_prompt_ids(32768, model.config.vocab_size, "cuda")
    for name, cfg in [("evict", SWAAConfig(sliding_window_size=2048, keep_first=100)),
                      ("fadec", SWAAConfig(sliding_window_size=2048, keep_first=100, force_fa_decode=True)),
                      ("full", None)]:
        apply_swaa(model, cfg, kv_eviction=True)
        c, t = _prefill(model, ids[:, :4096]); del c
        torch.cuda.synchronize()
        ts = []
        for _ in range(2):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            cache, tok = _prefill(model, ids); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
            del cache
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            cache, tok = _prefill(model, ids); torch.cuda.synchronize()
        txt = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        txt2 = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
        # decode steps
        dts = []
        with torch.no_grad():
            for i in range(8):
                torch.cuda.synchronize(); t0 = time.perf_counter()
                o = model(tok, past_key_values=cache, use_cache=True); tok = o.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize(); dts.append(time.perf_counter() - t0)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof2:
                o = model(tok, past_key_values=cache, use_cache=True); torch.cuda.synchronize()
        txt3 = prof2.key_averages().table(sort_by="cpu_time_total", row_limit=30)
        txt4 = prof2.key_averages().table(sort_by="cuda_time_total", row_limit=15)
        open(os.path.join(out, f"prof_{name}.txt"), "w").write(
            f"prefill {ts}\ndecode {dts}\n\nPREFILL by cuda\n{txt}\n\nPREFILL by cpu\n{txt2}\n\nDECODE by cpu\n{txt3}\n\nDECODE by cuda\n{txt4}\n")
        rec(kind="e2e_probe", setting=name, prefill_s=ts, decode_s=dts)
        del cache
        torch.cuda.empty_cache()
save()
