"""Developer sweep (GPU), session 7: the forward loop that defers P V by one block (SWAA_TRITON_DEFER) against the
default loop and Flex over tile configs, with the one-compare mask in both; full causal; forward+backward with the
one-kernel delta preamble (and the deferred forward), with the backward's per-kernel times from the profiler.
Writes $OUT/sweep_session7.json as it goes. Not a test. PART=ws (the warp-specialised loop) needs commit eab3aa6, where
it existed; it hung on the H200 (benchmarks/results/triton_ws_probe_session7_h200.json)."""
import os, sys
import torch
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.attention import kernel_times, timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T
from sweep_log import SweepLog, fwd_inputs_and_flex

PART = os.environ.get("PART", "")
log = SweepLog(f"sweep_session7{PART and '_' + PART}", "median ms (benchmarks.attention.timeit); fwd tflops = "
               "4*pairs*D*H/t, fwdbwd 10*pairs*D*H/t (visible pairs only); err = max abs difference from the default "
               "loop's output", part=PART)
res, rec, save = log.res, log.rec, log.save


def launch_info():
    L = T.LAST_FWD_LAUNCH
    return dict(regs=getattr(L, "n_regs", None), spills=getattr(L, "n_spills", None),
                smem=getattr(getattr(L, "metadata", None), "shared", None))


def fwd_variants(name, n, hq, hkv, d, w, s, variants):
    q, k, v, kw, tf = fwd_inputs_and_flex(log, name, n, hq, hkv, d, w, s)
    base = None
    for defer, cfg in variants:
        if log.out_of_time():
            break
        T._DEFER_FWD = defer == 1                     # 0: the default loop, 1: deferred P V, "ws": warp-specialised
        T._WS_FWD = defer == "ws"
        if cfg == "default":
            os.environ.pop("SWAA_TRITON_FWD", None)
        else:
            os.environ["SWAA_TRITON_FWD"] = cfg
        try:
            o = swaa_attention(q, k, v, backend="triton", **kw)
            err = 0.0 if base is None else (o.float() - base.float()).abs().max().item()
            base = o if base is None else base
            ms = timeit(lambda: swaa_attention(q, k, v, backend="triton", **kw))
            rec(kind="fwd", shape=name, n=n, window=w, keep_first=s, defer=defer, cfg=cfg, ms=round(ms, 3),
                tflops=tf(ms), err=err, **launch_info())
        except Exception as e:
            rec(kind="fwd", shape=name, n=n, window=w, keep_first=s, defer=defer, cfg=cfg, error=str(e)[-300:])
    os.environ.pop("SWAA_TRITON_FWD", None)
    T._DEFER_FWD, T._WS_FWD = None, False
    torch.cuda.empty_cache()


def fwdbwd(name, n, hq, hkv, d, w, s, backends, profile_it=False):
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    pairs = visible_pairs(n, n, w, s)
    for be, defer in backends:
        if log.out_of_time():
            break
        T._DEFER_FWD = bool(defer)
        fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be),
                                         (q, k, v), do)
        try:
            ms = timeit(fn)
            r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be, defer=defer,
                     ms=round(ms, 3), tflops=round(10 * pairs * d * hq / ms / 1e9, 1))
            if profile_it and be == "triton":
                r["kernels_ms"] = kernel_times(fn)
            rec(**r)
        except Exception as e:
            rec(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be, defer=defer, error=str(e)[-300:])
    T._DEFER_FWD = False
    torch.cuda.empty_cache()


if os.environ.get("PART") == "dkdv":
    # session 7, last call: dK/dV tiles without the 64x64 tile's register spills (ptxas, scripts/dev/aot_sm90.py:
    # 64x64 spills ~108 bytes at 255 registers, 32x64 and 64x32 none); gradients compared with the default's
    n, hq, hkv, d = 32768, 32, 8, 128
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    for s_ in (100, 0):
        pairs = visible_pairs(n, n, 2048, s_)
        base = None
        for cfg in ["default", "32,64,4,2", "32,64,4,3", "64,32,4,2", "default"]:
            if log.out_of_time():
                break
            if cfg == "default":
                os.environ.pop("SWAA_TRITON_DKDV", None)
            else:
                os.environ["SWAA_TRITON_DKDV"] = cfg
            fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=2048, keep_first=s_,
                                                            backend="triton"), (q, k, v), do)
            try:
                g = fn()
                err = None if base is None else max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                                                    for a, b in zip(g, base))
                base = g if base is None else base
                ms = timeit(fn)
                rec(kind="fwdbwd", shape="qwen3-4b", n=n, window=2048, keep_first=s_, dkdv_cfg=cfg, ms=round(ms, 3),
                    tflops=round(10 * pairs * d * hq / ms / 1e9, 1), rel_diff_vs_default=err)
            except Exception as e:
                rec(kind="fwdbwd", shape="qwen3-4b", n=n, window=2048, keep_first=s_, dkdv_cfg=cfg, error=str(e)[-300:])
    os.environ.pop("SWAA_TRITON_DKDV", None)
    save()
    sys.exit(0)
if os.environ.get("PART") == "ws":
    # session 7, second call: Triton's Hopper warp specialisation (a TMA producer and two 64-row consumer
    # warpgroups), which engages once the loop is branch-free and not under an scf.if
    ws = [(1, "default"), ("ws", "128,64,4,3"), ("ws", "128,64,4,2"), ("ws", "128,128,4,2"), ("ws", "64,64,4,3"),
          ("ws", "128,64,4,4"), (1, "default")]
    fwd_variants("qwen3-4b", 32768, 32, 8, 128, 2048, 100, ws)
    fwd_variants("qwen3-4b", 131072, 32, 8, 128, 2048, 100, ws[:3] + ws[-1:])
    fwd_variants("qwen3-4b", 32768, 32, 8, 128, 2048, 0, ws[:3])
    fwd_variants("smollm2", 32768, 9, 3, 64, 2048, 100, [(0, "default"), ("ws", "128,64,4,3"), ("ws", "128,64,4,2"),
                                                          ("ws", "128,128,4,2"), ("ws", "64,64,4,2")])
    fwd_variants("qwen3-4b", 32768, 32, 8, 128, None, 0, [(1, "default"), ("ws", "128,64,4,3"), ("ws", "128,128,4,2")])
    save()
    sys.exit(0)
big = [(0, "default"), (1, "default"), (1, "64,64,4,2"), (1, "128,64,8,3"), (1, "128,64,8,2"), (1, "64,32,4,3"),
       (0, "default")]
fwd_variants("qwen3-4b", 32768, 32, 8, 128, 2048, 100, big)
fwdbwd("qwen3-4b", 32768, 32, 8, 128, 2048, 100, [("flex", 0), ("triton", 0), ("triton", 1)], profile_it=True)
fwd_variants("qwen3-4b", 131072, 32, 8, 128, 2048, 100, [(0, "default"), (1, "default"), (1, "64,64,4,2")])
fwd_variants("smollm2", 32768, 9, 3, 64, 2048, 100, [(0, "default"), (1, "default"), (1, "64,64,4,3"),
                                                      (1, "128,64,4,2")])
fwd_variants("qwen3-4b", 32768, 32, 8, 128, None, 0, [(0, "default"), (1, "default")])
fwdbwd("qwen3-4b", 32768, 32, 8, 128, 2048, 0, [("flex", 0), ("triton", 0), ("triton", 1)])
fwdbwd("smollm2", 32768, 9, 3, 64, 2048, 100, [("flex", 0), ("triton", 0), ("triton", 1)])
save()
