"""Developer sweep (GPU), session 5: the forward loop that issues the next block's Q K^T before this block's softmax
(SWAA_TRITON_PREFETCH) against the default loop and Flex over tile configs; then Qwen3-4B prefills with the norms
and MLPs compiled (swaa compile_blocks) against eager. Writes $OUT/sweep_session5.json.
The prefetch loop was removed after this sweep (benchmarks/results/triton_sweep_session5_h200.json: 11-47% slower
than the default loop in every tile config); rerun at commit "compile_blocks: ..." to reproduce it."""
import json, os, sys, time
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
              open(os.path.join(out, "sweep_session5.json"), "w"), indent=1)
def rec(**r):
    res.append(r); print(r, flush=True); save()

w, s = 2048, 100
PART = os.environ.get("PART", "fwd,e2e")
if "fwd" in PART:
  shapes = [(32768, 32, 8, 128), (131072, 32, 8, 128), (32768, 9, 3, 64)]
  for (n, hq, hkv, d) in shapes:
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    pairs = visible_pairs(n, n, w, s)
    tf = lambda ms: round(4 * pairs * d * hq / ms / 1e9, 1)
    run = lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
    with torch.no_grad():
        ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="flex"))
        rec(kind="fwd", n=n, d=d, backend="flex", ms=round(ms, 3), tflops=tf(ms))
        ref = run()
        cfgs = os.environ.get("CFGS" if d == 128 else "CFGS64",
                              "default 64,64,4,2 64,64,4,3 128,64,8,2 128,64,8,3 128,128,8,2 64,128,4,2").split()
        for pf in (0, 1):
            T._PREFETCH_FWD = bool(pf)
            for cfg in (cfgs if pf else ["default"]):
                if cfg == "default":
                    os.environ.pop("SWAA_TRITON_FWD", None)
                else:
                    os.environ["SWAA_TRITON_FWD"] = cfg
                try:
                    err = (run().float() - ref.float()).abs().max().item()
                    ms = timeit(run)
                    L = T.LAST_FWD_LAUNCH
                    rec(kind="fwd", n=n, d=d, prefetch=pf, cfg=cfg, ms=round(ms, 3), tflops=tf(ms), err=err,
                        regs=getattr(L, "n_regs", None), spills=getattr(L, "n_spills", None),
                        smem=getattr(getattr(L, "metadata", None), "shared", None))
                except Exception as e:
                    rec(kind="fwd", n=n, d=d, prefetch=pf, cfg=cfg, error=str(e)[-300:])
        os.environ.pop("SWAA_TRITON_FWD", None)
        T._PREFETCH_FWD = False
        ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="flex"))
        rec(kind="fwd", n=n, d=d, backend="flex", ms=round(ms, 3), tflops=tf(ms))
    del q, k, v, ref
    torch.cuda.empty_cache()

if "e2e" in PART:
    from swaa.config import SWAAConfig
    from swaa.speed.costmodel import get_shape
    from swaa.speed.measure import build_random_model, random_prompt_ids, time_setting
    from swaa.integrations.transformers import compile_blocks
    shape = get_shape("qwen3-4b")
    model = build_random_model(shape, device="cuda")
    settings = [SWAAConfig(), SWAAConfig(sliding_window_size=2048, keep_first=100, force_fa_decode=True)]
    for compiled in (1, 0):
        compile_blocks(model, enabled=bool(compiled))
        torch._dynamo.reset()
        for n in [int(x) for x in os.environ.get("LENS", "32768,131072").split(",")]:
            if not compiled and n > 32768:
                continue
            ids = random_prompt_ids(n, shape.vocab, "cuda")
            t0 = time.time()
            time_setting(model, shape, settings[1], ids, reps=1, decode_steps=0, warmup_n=None)   # warm / compile
            warm = time.time() - t0
            for cfg in settings:
                row = time_setting(model, shape, cfg, ids, reps=2, decode_steps=8, warmup_n=4096)
                rec(kind="e2e", compiled=compiled, n=n, mark=cfg.mark, prefill_s=row["prefill_s"],
                    prefill_all_s=row["prefill_all_s"], decode_step_ms=row["decode_step_ms"],
                    peak_gib=row["peak_mem_bytes"] / 2**30, warm_s=warm)
            del ids
            torch.cuda.empty_cache()
save()
