"""Developer probe (GPU), session 7: does the warp-specialised forward (SWAA_TRITON_WS=1) compile, run and match the
default loop? One case per call (argv: n cfg S), meant to run under `timeout`; prints a line per stage. The WS loop
was removed after this probe (it deadlocked with sinks and gave NaN without:
benchmarks/results/triton_ws_probe_session7_h200.json); run at commit eab3aa6 to reproduce."""
import os, sys, time
import torch
sys.path.insert(0, os.getcwd())
import swaa.attention.triton as T
from swaa.attention import swaa_attention

n, cfg, s = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
v = torch.randn_like(k)
ref = swaa_attention(q, k, v, sliding_window_size=2048, keep_first=s, backend="triton")
torch.cuda.synchronize()
T._DEFER_FWD, T._WS_FWD = False, True
os.environ["SWAA_TRITON_FWD"] = cfg
t = time.time()
out = swaa_attention(q, k, v, sliding_window_size=2048, keep_first=s, backend="triton")
print("launched", round(time.time() - t, 1), "s", flush=True)
torch.cuda.synchronize()
print("ran", round(time.time() - t, 1), "s; max abs diff", (out.float() - ref.float()).abs().max().item(), flush=True)
if n >= 32768:
    from benchmarks.attention import timeit
    ms = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=2048, keep_first=s, backend="triton"))
    T._WS_FWD = False
    os.environ.pop("SWAA_TRITON_FWD")
    ms0 = timeit(lambda: swaa_attention(q, k, v, sliding_window_size=2048, keep_first=s, backend="triton"))
    print(f"ws {cfg}: {ms:.3f} ms, default {ms0:.3f} ms", flush=True)
