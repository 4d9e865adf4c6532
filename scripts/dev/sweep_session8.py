"""Developer sweep (GPU), session 8: the warp-specialised Gluon kernels (swaa/attention/triton/_fwd_gluon.py,
_bwd_gluon.py).

PART=check: the Gluon forward (SWAA_TRITON_GLUON=1) against attention_ref over an edge-case grid (odd lengths, W=1,
sinks past the window, GQA 3 and 4, Lq != Lk, fp16, head_dim 64, full causal, varlen), with the triton-language
kernel's error beside it. PART=time / pingpong: forward times of Gluon configurations against the triton-language
kernel and Flex, and forward+backward with either forward. PART=bwd (for the next GPU session): the Gluon dK/dV
kernel's gradients against the triton-language one's, and forward+backward times with either. Writes
$OUT/sweep_session8_<part>.json as it goes. Not a test."""
import os, sys
import torch
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.attention import kernel_times, timeit
from swaa.attention import attention_ref, swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T
from sweep_log import SweepLog, fwd_inputs_and_flex

PART = os.environ.get("PART", "check")
log = SweepLog(f"sweep_session8_{PART}", "median ms (benchmarks.attention.timeit); fwd tflops = 4*pairs*D*H/t, "
               "fwdbwd 10*pairs*D*H/t (visible pairs only)", hang_s=float(os.environ.get("HANG_S", "100")), part=PART)
res, rec, save = log.res, log.rec, log.save


DEFAULT_CFG = T._GLUON_CFG                     # SWAA_TRITON_GLUON_CFG or the module's default


def use(gluon, cfg=None):
    T._GLUON_FWD = gluon
    T._GLUON_CFG = cfg or DEFAULT_CFG


def check(lq, lk, hq, hkv, d, w, s, dtype=torch.bfloat16, b=1):
    q = torch.randn(b, hq, lq, d, device="cuda", dtype=dtype)
    k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype)
    v = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype)
    kw = dict(sliding_window_size=w, keep_first=s)
    ref, ref_lse = attention_ref(q, k, v, return_lse=True, **kw)
    low = attention_ref(q, k, v, upcast=False, **kw)
    r = dict(kind="check", lq=lq, lk=lk, hq=hq, hkv=hkv, d=d, window=w, keep_first=s, dtype=str(dtype)[6:], b=b,
             torch_err=(low.float() - ref.float()).abs().max().item())
    for name, g in (("triton", False), ("gluon", True)):
        use(g)
        with torch.no_grad():
            o, lse = swaa_attention(q, k, v, backend="triton", return_lse=True, **kw)
        torch.cuda.synchronize()
        r[f"{name}_err"] = (o.float() - ref.float()).abs().max().item()
        fin = torch.isfinite(ref_lse)
        r[f"{name}_lse_err"] = (lse[fin] - ref_lse[fin]).abs().max().item() if fin.any() else 0.0
        r[f"{name}_lse_inf_ok"] = bool((lse[~fin] == float("-inf")).all())
        if g:
            r["gluon_ran"] = "_fwd_gluon_kernel" in str(getattr(T.LAST_FWD_LAUNCH, "name", T.LAST_FWD_LAUNCH))
    r["ok"] = (r["gluon_err"] <= 2 * max(r["torch_err"], r["triton_err"]) + 1e-3 and r["gluon_lse_err"] < 2e-2
               and r["gluon_lse_inf_ok"])
    rec(**r)


def check_varlen(lens, hq, hkv, d, w, s):
    from swaa.attention.triton import swaa_attention_varlen
    tot = sum(lens)
    q = torch.randn(tot, hq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(tot, hkv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(tot, hkv, d, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), device="cuda", dtype=torch.int32)
    outs = {}
    for name, g in (("triton", False), ("gluon", True)):
        use(g)
        with torch.no_grad():
            outs[name] = swaa_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), sliding_window_size=w,
                                               keep_first=s)
    err = {n: 0.0 for n in outs}
    for i, n_ in enumerate(lens):
        a, e = int(cu[i]), int(cu[i + 1])
        ref = attention_ref(q[a:e].transpose(0, 1)[None], k[a:e].transpose(0, 1)[None], v[a:e].transpose(0, 1)[None],
                            sliding_window_size=w, keep_first=s)[0].transpose(0, 1)
        for n in outs:
            err[n] = max(err[n], (outs[n][a:e].float() - ref.float()).abs().max().item())
    rec(kind="check_varlen", lens=lens, hq=hq, hkv=hkv, d=d, window=w, keep_first=s, triton_err=err["triton"],
        gluon_err=err["gluon"], ok=err["gluon"] <= 2 * err["triton"] + 2e-3)


def fwd_time(name, n, hq, hkv, d, w, s, cfgs):
    q, k, v, kw, tf = fwd_inputs_and_flex(log, name, n, hq, hkv, d, w, s)
    use(False)
    base = swaa_attention(q, k, v, backend="triton", **kw)
    for cfg in cfgs:
        if log.out_of_time():
            break
        use(cfg != "triton", None if cfg == "triton" else cfg)
        try:
            o = swaa_attention(q, k, v, backend="triton", **kw)
            ms = timeit(lambda: swaa_attention(q, k, v, backend="triton", **kw))
            rec(kind="fwd", shape=name, n=n, window=w, keep_first=s, cfg=str(cfg), ms=round(ms, 3), tflops=tf(ms),
                err_vs_triton=(o.float() - base.float()).abs().max().item())
        except Exception as e:
            rec(kind="fwd", shape=name, n=n, window=w, keep_first=s, cfg=str(cfg), error=str(e)[-400:])
    use(None)
    torch.cuda.empty_cache()


def fwdbwd_time(name, n, hq, hkv, d, w, s, backends=(("flex", None), ("triton", False), ("triton", True))):
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    pairs = visible_pairs(n, n, w, s)
    for be, g in backends:
        if log.out_of_time():
            break
        use(g)
        fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be),
                                         (q, k, v), do)
        try:
            ms = timeit(fn)
            r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be, gluon=g,
                     gluon_bwd=T._GLUON_BWD and be == "triton", ms=round(ms, 3),
                     tflops=round(10 * pairs * d * hq / ms / 1e9, 1))
            if be == "triton":
                r["kernels_ms"] = kernel_times(fn)
            rec(**r)
        except Exception as e:
            rec(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be, gluon=g, error=str(e)[-400:])
    use(None)
    torch.cuda.empty_cache()


if PART == "check":
    check(256, 256, 4, 4, 128, 64, 4)                      # first: small, one CTA row pair per head
    for case in [(1000, 1000, 32, 8, 128, 2048, 100), (4099, 4099, 32, 8, 128, 1, 0), (1023, 1023, 9, 3, 64, 16, 40),
                 (4096, 4096, 12, 4, 128, None, 0), (1, 4099, 32, 8, 128, 2048, 100), (127, 8192, 9, 3, 64, 512, 4),
                 (2000, 2000, 8, 8, 128, 100, 300), (65, 65, 6, 2, 128, 1, 1), (129, 700, 6, 2, 64, 3, 200),
                 (8192, 8192, 32, 8, 128, 2048, 100), (5, 300, 8, 8, 128, 16, 2), (3000, 3000, 9, 3, 64, 4096, 10)]:
        check(*case)
    check(777, 777, 8, 2, 128, 128, 4, dtype=torch.float16)
    check(513, 513, 8, 2, 128, 64, 10, b=3)
    check_varlen([1000, 37, 4096, 1], 32, 8, 128, 256, 100)
    check_varlen([129, 64, 300], 9, 3, 64, 16, 4)
    res["all_ok"] = all(r.get("ok") for r in res["rows"])
    save()
    print("ALL OK" if res["all_ok"] else "FAILURES", flush=True)
elif PART == "bwd":
    # session 9, first call: the Gluon dK/dV kernel (written and compiled offline in session 8, not run before): its
    # gradients against the triton-language kernel's, then forward+backward times with either dK/dV
    for n, hq, hkv, d, w, s_ in [(1000, 8, 2, 128, 256, 100), (4096, 32, 8, 128, 2048, 100), (3000, 9, 3, 64, 512, 4)]:
        mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = mk(hq), mk(hkv), mk(hkv)
        do = torch.randn_like(q)
        grads = {}
        for g in (False, True):
            T._GLUON_BWD = g
            grads[g] = torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s_,
                                                          backend="triton"), (q, k, v), do)
            torch.cuda.synchronize()
        rel = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                  for a, b in zip(grads[True], grads[False]))
        rec(kind="check_bwd", n=n, hq=hq, hkv=hkv, d=d, window=w, keep_first=s_, ran_gluon=T.LAST_BWD_GLUON,
            rel_diff_vs_triton=rel, ok=rel < 2e-2)
    for shape in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("qwen3-4b", 32768, 32, 8, 128, 2048, 0),
                  ("smollm2", 32768, 9, 3, 64, 2048, 100)]:
        for g in (False, True, False):
            T._GLUON_BWD = g
            fwdbwd_time(*shape)
    T._GLUON_BWD = False
    save()
elif PART == "bwdcfg":
    # session 9: the Gluon dK/dV's ring stages: gradients against the triton-language kernel's, then forward+backward
    # times (the Gluon forward on). Its first run also compared loading a tile's LSE and delta one tile ahead
    # (slower, since removed): cfg (stages, ahead) in triton_sweep_session9_h200.json
    cfgs = [int(c) for c in os.environ.get("BWD_STAGES", "2,3").split(",")]
    for n, hq, hkv, d, w, s_ in [(1000, 8, 2, 128, 256, 100), (4096, 32, 8, 128, 2048, 100), (3000, 9, 3, 64, 512, 4),
                                 (777, 6, 2, 128, 1, 300)]:
        mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = mk(hq), mk(hkv), mk(hkv)
        do = torch.randn_like(q)
        T._GLUON_BWD = False
        base = torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s_, backend="triton"),
                                   (q, k, v), do)
        for cfg in cfgs:
            T._GLUON_BWD, T._GLUON_BWD_STAGES = True, cfg
            got = torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s_,
                                                     backend="triton"), (q, k, v), do)
            torch.cuda.synchronize()
            rel = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(got, base))
            rec(kind="check_bwd", stages=cfg, n=n, hq=hq, hkv=hkv, d=d, window=w, keep_first=s_,
                ran_gluon=T.LAST_BWD_GLUON, rel_diff_vs_triton=rel, ok=rel < 2e-2)
    bad = {r["stages"] for r in res["rows"] if r.get("kind") == "check_bwd" and not r["ok"]}
    for shape in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("qwen3-4b", 32768, 32, 8, 128, 2048, 0)]:
        for cfg in cfgs + cfgs[:1]:
            if cfg in bad or log.out_of_time():
                continue
            T._GLUON_BWD, T._GLUON_BWD_STAGES = True, cfg
            fwdbwd_time(*shape, backends=(("flex", None), ("triton", True)) if cfg == cfgs[0] else (("triton", True),))
            res["rows"][-1]["bwd_stages"] = cfg
    T._GLUON_BWD = False
    save()
elif PART == "pingpong":
    # (session 8, fourth call, when the config still had a Q-loader flag before sinks-last: (128, 3, 3, 1, 0, x))
    A, P, P2 = (128, 3, 3, 0, 0), (128, 3, 3, 0, 1), (128, 2, 2, 0, 1)  # consumers free / taking turns
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 2048, 100, ["triton", A, P, P2, A, P])
    fwd_time("qwen3-4b", 131072, 32, 8, 128, 2048, 100, ["triton", A, P, P2, A, P])
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 2048, 0, ["triton", A, P])
    fwd_time("qwen3-4b", 8192, 32, 8, 128, 2048, 100, ["triton", A, P])
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 4096, 100, ["triton", A, P])
    fwd_time("qwen3-4b", 32768, 32, 8, 128, None, 0, ["triton", A, P])
    save()
else:
    # third call, when the config had a Q-loader flag (Q in its own warp or in the K loader; the latter is gone):
    # A, B, C = (128, 3, 3, 1, 0), (128, 3, 3, 0, 0), (128, 3, 3, 1, 1); now A and C are
    A, C = (128, 3, 3, 0, 0), (128, 3, 3, 1, 0)                           # sinks first / last
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 2048, 100, ["triton", A, C, (128, 2, 3, 0, 0), (128, 2, 2, 0, 0), A])
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 2048, 0, ["triton", A, C])
    fwd_time("qwen3-4b", 131072, 32, 8, 128, 2048, 100, ["triton", A, C])
    fwd_time("qwen3-4b", 8192, 32, 8, 128, 2048, 100, ["triton", A, C])
    fwdbwd_time("qwen3-4b", 32768, 32, 8, 128, 2048, 100)
    fwd_time("qwen3-4b", 32768, 32, 8, 128, 4096, 100, ["triton", A, C])
    fwd_time("qwen3-4b", 32768, 32, 8, 128, None, 0, ["triton", A])
    fwd_time("smollm2", 32768, 9, 3, 64, 2048, 100, ["triton", (128, 2, 2, 0, 0), (128, 2, 2, 1, 0)])
    save()
