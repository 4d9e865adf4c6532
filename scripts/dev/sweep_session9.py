"""Developer sweep (GPU), session 9: where a forward+backward's time goes between kernels, and the Gluon dK/dV
(swaa/attention/triton/_bwd_gluon.py) at head_dim 64 and 128.

PART=gaps: for each shape, the forward+backward timed as the benchmark does (one call per event pair) and back to
back (``inner`` calls per pair), the host's time to enqueue one call, and the GPU timeline of one call from the
profiler (each kernel's start and length, the idle time before it). Then forward+backward with the Gluon dK/dV on
and off. PART=dq: the Gluon dK/dV computing dQ as well (atomic adds into fp32, no dQ kernel): its gradients
against the separate dQ kernel's and attention_ref's, then forward+backward times with and without. Writes
$OUT/sweep_session9_<part>.json as it goes. Not a test."""
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
from sweep_log import SweepLog, fwdbwd

PART = os.environ.get("PART", "gaps")
log = SweepLog(f"sweep_session9_{PART}", "median ms (benchmarks.attention.timeit); tflops = 10*pairs*D*H/t "
               "(visible pairs only); timeline: kernel start offsets and idle gaps in us from the profiler",
               hang_s=float(os.environ.get("HANG_S", "100")), part=PART)


def grad_inputs(n, hq, hkv, d):
    """bf16 (1, H, n, d) q, k, v needing gradients, and an upstream gradient for the output."""
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q = mk(hq)
    return q, mk(hkv), mk(hkv), torch.randn_like(q)


def timeline(fn):
    """(name, start us, duration us, idle us before it) of each GPU kernel of one call, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    ev = []
    for e in prof.profiler.kineto_results.events():
        if e.device_type() == torch.autograd.DeviceType.CUDA and e.duration_ns() > 0:
            ev.append((e.start_ns(), e.duration_ns(), e.name()[:40]))
    ev.sort()
    if not ev:
        return []
    t0, out, end = ev[0][0], [], ev[0][0]
    for st, du, name in ev:
        out.append((name, round((st - t0) / 1e3, 1), round(du / 1e3, 1), round(max(st - end, 0) / 1e3, 1)))
        end = max(end, st + du)
    return out


def case(name, n, hq, hkv, d, w, s, gluon_bwd):
    q, k, v, do = grad_inputs(n, hq, hkv, d)
    pairs = visible_pairs(n, n, w, s)
    for be in ("flex", "triton"):
        if log.out_of_time():
            return
        T._GLUON_BWD = gluon_bwd
        fn = fwdbwd(q, k, v, do, w, s, be)
        try:
            one = timeit(fn)
            four = timeit(fn, inner=4)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(4):
                fn()
            host = (time.perf_counter() - t) / 4 * 1e3       # enqueue time per call while the GPU runs behind
            torch.cuda.synchronize()
            r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be,
                     gluon_bwd=gluon_bwd if be == "triton" else None, ms=round(one, 3), ms_back_to_back=round(four, 3),
                     host_ms=round(host, 3), tflops=round(10 * pairs * d * hq / one / 1e9, 1))
            if be == "triton":
                r["kernels_ms"] = kernel_times(fn)
                r["ran_gluon_bwd"] = T.LAST_BWD_GLUON
                r["timeline"] = timeline(fn)
            log.rec(**r)
        except Exception as e:
            log.rec(kind="fwdbwd", shape=name, n=n, backend=be, gluon_bwd=gluon_bwd, error=str(e)[-400:])
    torch.cuda.empty_cache()


if PART == "gaps":
    for shape in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("smollm2", 32768, 9, 3, 64, 2048, 100),
                  ("smollm2", 8192, 9, 3, 64, 4096, 100), ("qwen3-4b", 8192, 32, 8, 128, 2048, 100)]:
        for g in (True, False):
            case(*shape, gluon_bwd=g)
    T._GLUON_BWD = False
    log.save()


def grads(q, k, v, do, w, s, fused):
    T._GLUON_BWD, T._GLUON_DQ = True, fused
    g = fwdbwd(q, k, v, do, w, s, "triton")()
    torch.cuda.synchronize()
    return g


def fb_time(name, n, hq, hkv, d, w, s, fused, flex=False):
    q, k, v, do = grad_inputs(n, hq, hkv, d)
    pairs = visible_pairs(n, n, w, s)
    for be in (("flex", "triton") if flex else ("triton",)):
        if log.out_of_time():
            return
        T._GLUON_BWD, T._GLUON_DQ = True, fused
        fn = fwdbwd(q, k, v, do, w, s, be)
        try:
            ms = timeit(fn)
            r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be, fused_dq=fused,
                     ms=round(ms, 3), ms_back_to_back=round(timeit(fn, inner=4), 3),
                     tflops=round(10 * pairs * d * hq / ms / 1e9, 1))
            if be == "triton":
                r["kernels_ms"] = kernel_times(fn)
            log.rec(**r)
        except Exception as e:
            log.rec(kind="fwdbwd", shape=name, n=n, backend=be, fused_dq=fused, error=str(e)[-600:])
    torch.cuda.empty_cache()


if PART == "dq":
    ok = True
    for n, hq, hkv, d, w, s_ in [(130, 4, 2, 128, 64, 129), (1000, 8, 2, 128, 256, 100), (777, 6, 2, 128, 1, 300),
                                 (3000, 9, 3, 64, 512, 4), (4096, 32, 8, 128, 2048, 100), (1, 4, 4, 128, 8, 2)][
            :0 if os.environ.get("SKIP_CHECK") else None]:
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        base, got = grads(q, k, v, do, w, s_, False), grads(q, k, v, do, w, s_, True)
        # relative to the largest gradient, floored at 0.05 (with one key dq and dk vanish: rel is noise there)
        rel = [((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(5e-2)).item()
               for a, b in zip(got, base)]
        leaf = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
        ref = torch.autograd.grad(attention_ref(*leaf, sliding_window_size=w, keep_first=s_), leaf, do.float())
        rel_ref = [((a.float() - b).abs().max() / b.abs().max().clamp_min(5e-2)).item() for a, b in zip(got, ref)]
        good = max(rel) < 2e-2 and max(rel_ref) < 3e-2
        ok &= good
        log.rec(kind="check_dq", n=n, hq=hq, hkv=hkv, d=d, window=w, keep_first=s_, ran_gluon=T.LAST_BWD_GLUON,
                rel_vs_dq_kernel=rel, rel_vs_ref=rel_ref, ok=good)
    from swaa.attention.triton import swaa_attention_varlen
    lens = [1000, 37, 4096, 1]
    cu = torch.tensor([0, 1000, 1037, 5133, 5134], dtype=torch.int32, device="cuda")
    mk = lambda h: torch.randn(5134, h, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(12), mk(4), mk(4)
    do = torch.randn_like(q)
    vg = {}
    for fused in (False, True):
        T._GLUON_BWD, T._GLUON_DQ = True, fused
        out = swaa_attention_varlen(q, k, v, cu, cu, 4096, 4096, sliding_window_size=256, keep_first=70)
        vg[fused] = torch.autograd.grad(out, (q, k, v), do)
    rel = [((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(vg[True], vg[False])]
    ok &= max(rel) < 2e-2
    log.rec(kind="check_dq_varlen", lens=lens, rel_vs_dq_kernel=rel, ok=max(rel) < 2e-2)
    print("ALL OK" if ok else "FAILURES", flush=True)
    if ok:
        for shape in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("qwen3-4b", 32768, 32, 8, 128, 2048, 0),
                      ("smollm2", 32768, 9, 3, 64, 2048, 100), ("qwen3-4b", 131072, 32, 8, 128, 2048, 100)]:
            fb_time(*shape, fused=False, flex=True)
            fb_time(*shape, fused=True)
            fb_time(*shape, fused=False)
            fb_time(*shape, fused=True)
    T._GLUON_BWD, T._GLUON_DQ = True, False
    log.save()

if PART == "dqcfg":
    # the dQ kernel's tiles (SWAA_TRITON_DQ = BLOCK_M, BLOCK_N, warps, stages), with the Gluon dK/dV: dq against the
    # default's, and the kernel's time from the profiler
    T._GLUON_BWD, T._GLUON_DQ = True, False
    for name, n, hq, hkv, d, w, s_ in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("smollm2", 32768, 9, 3, 64, 2048, 100)]:
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s_,
                                                        backend="triton"), (q,), do)[0]
        base = fn()
        for cfg in os.environ.get("DQ_CFGS", "64,64,4,2;128,64,8,2;64,128,4,2;128,64,8,3;128,128,8,2;64,64,4,3;"
                                  "64,64,4,2").split(";"):
            if log.out_of_time():
                break
            os.environ["SWAA_TRITON_DQ"] = cfg
            try:
                got = fn()
                rel = ((got.float() - base.float()).abs().max() / base.float().abs().max()).item()
                ker = kernel_times(fn)
                log.rec(kind="dq_cfg", shape=name, n=n, cfg=cfg, rel_vs_default=rel, ok=rel < 2e-2,
                        dq_ms=ker.get("_bwd_dq_kernel"), fwdbwd_ms=round(timeit(fn), 3))
            except Exception as e:
                log.rec(kind="dq_cfg", shape=name, cfg=cfg, error=str(e)[-400:])
        os.environ.pop("SWAA_TRITON_DQ", None)
        torch.cuda.empty_cache()
    log.save()

if PART == "overlap":
    # the Gluon dK/dV's consumers taking turns (PINGPONG) and the dQ kernel on a side stream beside dK/dV: gradients
    # against the default's, then forward+backward times, variants interleaved. Ran at commit 264d854, whose two options
    # (T._GLUON_BWD_PINGPONG, T._BWD_STREAMS) were removed after: neither beat the default
    # (triton_sweep_session9_h200.json)
    variants = {"default": (False, False), "pingpong": (True, False), "streams": (False, True), "both": (True, True)}

    def use_variant(name):
        T._GLUON_BWD, T._GLUON_DQ = True, False
        T._GLUON_BWD_PINGPONG, T._BWD_STREAMS = variants[name]

    ok = True
    for n, hq, hkv, d, w, s_ in [(4096, 32, 8, 128, 2048, 100), (3000, 9, 3, 64, 512, 4), (777, 6, 2, 128, 1, 300),
                                 (130, 4, 2, 128, 64, 129)]:
        q, k, v, do = grad_inputs(n, hq, hkv, d)
        got = {}
        for name in variants:
            use_variant(name)
            got[name] = fwdbwd(q, k, v, do, w, s_, "triton")()
            torch.cuda.synchronize()
        for name in variants:
            rel = max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(5e-2)).item()
                      for a, b in zip(got[name], got["default"]))
            ok &= rel < 2e-2
            log.rec(kind="check_overlap", variant=name, n=n, hq=hq, d=d, window=w, keep_first=s_, rel_vs_default=rel,
                    ok=rel < 2e-2)
    print("ALL OK" if ok else "FAILURES", flush=True)
    if ok:
        for name_, n, hq, hkv, d, w, s_ in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100),
                                            ("smollm2", 32768, 9, 3, 64, 2048, 100),
                                            ("qwen3-4b", 131072, 32, 8, 128, 2048, 100)]:
            q, k, v, do = grad_inputs(n, hq, hkv, d)
            for rnd in range(2):
                for name in ["flex"] + list(variants):
                    if log.out_of_time():
                        break
                    be = "flex" if name == "flex" else "triton"
                    if be == "triton":
                        use_variant(name)
                    fn = fwdbwd(q, k, v, do, w, s_, be)
                    ms = timeit(fn)
                    log.rec(kind="fwdbwd", shape=name_, n=n, round=rnd, variant=name, ms=round(ms, 3),
                            ms_back_to_back=round(timeit(fn, inner=3), 3))
            torch.cuda.empty_cache()
    use_variant("default")
    log.save()
