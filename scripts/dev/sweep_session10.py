"""Developer sweep (GPU), session 10: the backward's new variants and where the forward's sink cost goes.

Backward variants (Qwen3-4B shape unless said): "default" (the dQ kernel computes delta and runs first, then the
Gluon dK/dV), "delta-kernel" (SWAA_TRITON_DQ_PREAMBLE=0: the separate delta pass, as before), and the Gluon dK/dV
with fused dQ reducing by scalar atomics ("fused-v1"), red.global.add.v2.f32 ("fused-v2") or .v4 ("fused-v4").
PART=check: each variant's gradients against the default's and attention_ref's on odd shapes and varlen.
PART=bwd: forward+backward times (benchmarks.attention.timeit: back to back; and per-rep synced), kernel times,
variants interleaved over rounds, 32k and 128k. PART=fwd: forward at 32k/128k, W=2048, S = 0 / 100 / 128, ours
(sinks first, the default, and sinks last) against Flex, steady and synced, with the forward kernel's own time.
PART=host: the host's enqueue time per forward and per forward+backward. PART=all (default): check, then the others
if every check passed. PART=ab: the default configuration's forward and forward+backward times (kernel times from
the profiler), rows tagged $TAG, Flex too with FLEX=1: run in alternating processes with SWAA_TRITON_SINK_ONLY_MASK=0
and unset, so both builds are timed in one GPU call (commit 4aacc09, whose per-key sink mask was reverted after:
5-8% slower in every forward case, S = 0 included, and no faster in the backward). PART=clock: the SM clock and
power (nvidia-smi every 20 ms) while the 32k and the 128k forward run back to back for a few hundred ms each.
Writes $OUT/sweep_session10_<part>.json as it goes. Not a test."""
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.attention import kernel_times, timeit
from swaa.attention import attention_ref, swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T
from sweep_log import SmiTrace, SweepLog, fwdbwd, rel

PART = os.environ.get("PART", "all")
TAG = os.environ.get("TAG", "")
log = SweepLog(f"sweep_session10_{PART}{TAG}", "median ms; ms: back to back (benchmarks.attention.timeit), ms_sync: a "
               "host sync before each rep; tflops = 4 (fwd) or 10 (fwd+bwd) * pairs * D * H / ms, visible pairs only",
               hang_s=float(os.environ.get("HANG_S", "120")), part=PART,
               budget_s=float(os.environ.get("SWEEP_BUDGET_S", "420")))
VARIANTS = {"default": (False, 2, True), "delta-kernel": (False, 2, False), "fused-v1": (True, 1, True),
            "fused-v2": (True, 2, True), "fused-v4": (True, 4, True)}
QWEN = ("qwen3-4b", 32, 8, 128)


def use(variant):
    T._GLUON_BWD = True
    T._GLUON_DQ, T._GLUON_DQ_VEC, T._DQ_PREAMBLE = VARIANTS[variant]


def grad_inputs(n, hq, hkv, d):
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q = mk(hq)
    return q, mk(hkv), mk(hkv), torch.randn_like(q)


def grads(q, k, v, do, w, s, variant):
    use(variant)
    g = fwdbwd(q, k, v, do, w, s, "triton")()
    torch.cuda.synchronize()
    return g


def check() -> bool:
    ok = True
    for n, hq, hkv, d, w, s in [(130, 4, 2, 128, 64, 129), (1000, 8, 2, 128, 256, 100), (777, 6, 2, 128, 1, 300),
                                (3000, 9, 3, 64, 512, 4), (4096, 32, 8, 128, 2048, 100), (1, 4, 4, 128, 8, 2),
                                (2500, 8, 8, 128, None, 0)]:
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        leaf = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
        ref = torch.autograd.grad(attention_ref(*leaf, sliding_window_size=w, keep_first=s), leaf, do.float())
        base = grads(q, k, v, do, w, s, "default")
        for variant in VARIANTS:
            got = base if variant == "default" else grads(q, k, v, do, w, s, variant)
            r_def = [rel(a, b) for a, b in zip(got, base)]
            r_ref = [rel(a, b) for a, b in zip(got, ref)]
            good = max(r_def) < 2e-2 and max(r_ref) < 3e-2
            ok &= good
            log.rec(kind="check", variant=variant, n=n, hq=hq, hkv=hkv, d=d, window=w, keep_first=s,
                    ran_gluon=T.LAST_BWD_GLUON, rel_vs_default=r_def, rel_vs_ref=r_ref, ok=good)
    from swaa.attention.triton import swaa_attention_varlen
    cu = torch.tensor([0, 1000, 1037, 5133, 5134], dtype=torch.int32, device="cuda")
    mk = lambda h: torch.randn(5134, h, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(12), mk(4), mk(4)
    do = torch.randn_like(q)
    vg = {}
    for variant in VARIANTS:
        use(variant)
        out = swaa_attention_varlen(q, k, v, cu, cu, 4096, 4096, sliding_window_size=256, keep_first=70)
        vg[variant] = torch.autograd.grad(out, (q, k, v), do)
        r = [rel(a, b) for a, b in zip(vg[variant], vg["default"])]
        ok &= max(r) < 2e-2
        log.rec(kind="check_varlen", variant=variant, rel_vs_default=r, ok=max(r) < 2e-2)
    use("default")
    return ok


def bwd(rounds=2):
    for shape, n, w, s in [(QWEN, 32768, 2048, 100), (QWEN, 32768, 2048, 0), (QWEN, 131072, 2048, 100)]:
        name, hq, hkv, d = shape
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        pairs = visible_pairs(n, n, w, s)
        variants = ["flex"] + [x for x in VARIANTS if d == 128 or not x.startswith("fused")]
        for rnd in range(rounds):
            for variant in variants:
                if log.out_of_time():
                    return
                be = "flex" if variant == "flex" else "triton"
                if be == "triton":
                    use(variant)
                fn = fwdbwd(q, k, v, do, w, s, be)
                try:
                    ms = timeit(fn)
                    r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, round=rnd, variant=variant,
                             ms=round(ms, 3), ms_sync=round(timeit(fn, sync_each=True), 3),
                             tflops=round(10 * pairs * d * hq / ms / 1e9, 1))
                    if rnd == 0:
                        r["kernels_ms"] = kernel_times(fn)
                    log.rec(**r)
                except Exception as e:
                    log.rec(kind="fwdbwd", shape=name, n=n, variant=variant, error=str(e)[-600:])
        q = k = v = do = None
        torch.cuda.empty_cache()
    use("default")


def fwd(rounds=2):
    cfgs = {"sinks-first": (128, 3, 3, 0, 0), "sinks-last": (128, 3, 3, 1, 0)}
    for n in (32768, 131072):
        name, hq, hkv, d = QWEN
        mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
        q, k, v = mk(hq), mk(hkv), mk(hkv)
        for rnd in range(rounds):
            for w, s in [(2048, 0), (2048, 100), (2048, 128)]:
                pairs = visible_pairs(n, n, w, s)
                for variant in ["flex"] + list(cfgs):
                    if log.out_of_time():
                        return
                    be = "flex" if variant == "flex" else "triton"
                    if be == "triton":
                        T._GLUON_CFG = cfgs[variant]
                    fn = lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be)
                    with torch.no_grad():
                        ms = timeit(fn)
                        r = dict(kind="fwd", shape=name, n=n, window=w, keep_first=s, round=rnd, variant=variant,
                                 ms=round(ms, 3), ms_sync=round(timeit(fn, sync_each=True), 3),
                                 tflops=round(4 * pairs * d * hq / ms / 1e9, 1))
                        ker = kernel_times(fn, top=3)
                    r["kernel_ms"] = max(ker.values()) if ker else None
                    r["kernels_ms"] = ker
                    log.rec(**r)
        q = k = v = None
        torch.cuda.empty_cache()
    T._GLUON_CFG = cfgs["sinks-first"]


def host():
    for name, hq, hkv, d in (QWEN,):
        for n in (32768,):
            q, k, v, do = grad_inputs(n, hq, hkv, d)
            for be in ("flex", "triton"):
                for mode in ("fwd", "fwdbwd"):
                    if mode == "fwd":
                        fn = lambda: swaa_attention(q.detach(), k.detach(), v.detach(), sliding_window_size=2048,
                                                    keep_first=100, backend=be)
                    else:
                        fn = fwdbwd(q, k, v, do, 2048, 100, be)
                    for _ in range(3):
                        fn()
                    torch.cuda.synchronize()
                    reps = 20
                    t = time.perf_counter()
                    for _ in range(reps):
                        fn()
                    host_ms = (time.perf_counter() - t) / reps * 1e3
                    torch.cuda.synchronize()
                    log.rec(kind="host", shape=name, n=n, backend=be, mode=mode, host_ms=round(host_ms, 3))
            q = k = v = do = None
            torch.cuda.empty_cache()


def ab():
    name, hq, hkv, d = QWEN
    use("default")
    bes = ["triton"] + (["flex"] if os.environ.get("FLEX") == "1" else [])
    for mode, n, s in [("fwd", 32768, 100), ("fwd", 32768, 0), ("fwd", 32768, 128), ("fwd", 131072, 100),
                       ("fwd", 131072, 0), ("fwd", 131072, 128), ("fwdbwd", 32768, 100), ("fwdbwd", 32768, 0),
                       ("fwdbwd", 131072, 100)]:
        if mode not in os.environ.get("AB_MODES", "fwd,fwdbwd").split(","):
            continue
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        pairs = visible_pairs(n, n, 2048, s)
        for be in bes:
            if log.out_of_time():
                return
            if mode == "fwd":
                fn = lambda: swaa_attention(q.detach(), k.detach(), v.detach(), sliding_window_size=2048,
                                            keep_first=s, backend=be)
            else:
                fn = fwdbwd(q, k, v, do, 2048, s, be)
            ms = timeit(fn)
            log.rec(kind=mode, tag=TAG, shape=name, n=n, window=2048, keep_first=s, backend=be, ms=round(ms, 3),
                    tflops=round((4 if mode == "fwd" else 10) * pairs * d * hq / ms / 1e9, 1),
                    kernels_ms=kernel_times(fn))
        q = k = v = do = None
        torch.cuda.empty_cache()


def clock():
    import statistics
    name, hq, hkv, d = QWEN
    use("default")
    marks = []
    with SmiTrace(os.path.join(os.environ.get("OUT", "."), "clock_trace.csv"),
                  ["clocks.sm", "power.draw", "temperature.gpu"]) as trace:
        for n, reps in [(32768, 200), (131072, 50), (32768, 200)]:
            mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
            q, k, v = mk(hq), mk(hkv), mk(hkv)
            with torch.no_grad():
                fn = lambda: swaa_attention(q, k, v, sliding_window_size=2048, keep_first=100, backend="triton")
                fn()
                torch.cuda.synchronize()
                time.sleep(1.0)
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0 = time.time()
                a.record()
                for _ in range(reps):
                    fn()
                b.record()
                b.synchronize()
                marks.append((n, t0, time.time(), a.elapsed_time(b) / reps))
            q = k = v = None
            torch.cuda.empty_cache()
    for n, t0, t1, ms in marks:
        inside = trace.samples(t0 + 0.05, t1)
        log.rec(kind="clock", n=n, ms_per_call=round(ms, 3), seconds=round(t1 - t0, 2), samples=len(inside),
                sm_mhz_median=statistics.median([s[1] for s in inside]) if inside else None,
                sm_mhz_min=min([s[1] for s in inside]) if inside else None,
                power_w_median=statistics.median([s[2] for s in inside]) if inside else None,
                temp_c_max=max([s[3] for s in inside]) if inside else None)


if PART == "ab":
    ab()
if PART == "clock":
    clock()
if PART in ("check", "all"):
    good = check()
    print("ALL OK" if good else "FAILURES", flush=True)
    if PART == "all" and not good:
        sys.exit(1)
if PART in ("bwd", "all"):
    bwd()
if PART in ("fwd", "all"):
    fwd()
if PART in ("host", "all"):
    host()
log.save()
