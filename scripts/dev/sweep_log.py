"""What the GPU sweeps share (sessions 7-8). The JSON log: rows appended and the file rewritten in $OUT as each
lands, so a call cut by its time limit keeps what it measured; optionally a hang watchdog (faulthandler) re-armed
per row."""
import faulthandler
import json
import os
import time

import torch


class SweepLog:
    def __init__(self, name, note, budget_s=240.0, hang_s=None, **meta):
        import triton
        self.path = os.path.join(os.environ.get("OUT", "."), f"{name}.json")
        self.res = dict(**meta, device=torch.cuda.get_device_name(), torch=torch.__version__,
                        triton=triton.__version__, note=note, rows=[])
        self.t_end = time.time() + float(os.environ.get("SWEEP_BUDGET_S", budget_s))
        self.hang_s = hang_s
        self._arm()

    def _arm(self):
        if self.hang_s:                     # a hung kernel: print every thread's stack and exit
            faulthandler.cancel_dump_traceback_later()
            faulthandler.dump_traceback_later(self.hang_s, exit=True)

    def save(self):
        with open(self.path, "w") as f:
            json.dump(self.res, f, indent=1)

    def rec(self, **r):
        self.res["rows"].append(r)
        print(r, flush=True)
        self.save()
        self._arm()

    def out_of_time(self) -> bool:
        return time.time() > self.t_end


def fwdbwd(q, k, v, do, w, s, backend):
    """One forward+backward of ``backend`` under the rule (W ``w``, ``s`` sinks) as a callable, the unit the sweeps
    time: it returns the gradients of q, k and v for the upstream gradient ``do``."""
    from swaa.attention import swaa_attention
    return lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=backend),
                                       (q, k, v), do)


def rel(a, b):
    """|a - b|'s largest element relative to b's largest, the scale floored at 0.05 (with one key, dq and dk vanish:
    their relative error is noise): the sweeps' gradient check."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(5e-2)).item()


def fwd_inputs_and_flex(log, name, n, hq, hkv, d, w, s):
    """bf16 (1, H, n, d) q/k/v of one shape, Flex's forward time on them logged first (when there is a window);
    returns (q, k, v, mask kwargs, ms -> effective TFLOP/s)."""
    from benchmarks.attention import timeit
    from swaa.attention import swaa_attention
    from swaa.attention.masks import visible_pairs
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    pairs = visible_pairs(n, n, w, s)
    tf = lambda ms: round(4 * pairs * d * hq / ms / 1e9, 1)
    kw = dict(sliding_window_size=w, keep_first=s)
    if w is not None:
        ms = timeit(lambda: swaa_attention(q, k, v, backend="flex", **kw))
        log.rec(kind="fwd", shape=name, n=n, window=w, keep_first=s, backend="flex", ms=round(ms, 3), tflops=tf(ms))
    return q, k, v, kw, tf


class SmiTrace:
    """``nvidia-smi --query-gpu=timestamp,<fields>`` every 20 ms into ``path`` while the with-block runs (sessions
    10-11: the SM clock, power, utilisation under a kernel). ``samples(t0, t1)``: the rows taken in that span of
    ``time.time()``, as (timestamp, field values as floats...)."""

    def __init__(self, path, fields):
        self.path, self.fields = path, fields

    def __enter__(self):
        import subprocess
        self.mon = subprocess.Popen(["nvidia-smi", f"--query-gpu=timestamp,{','.join(self.fields)}",
                                     "--format=csv,noheader,nounits", "-lms", "20"], stdout=open(self.path, "w"))
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.mon.terminate()
        self.mon.wait()

    def samples(self, t0, t1):
        from datetime import datetime
        rows = []
        for line in open(self.path):
            parts = [x.strip() for x in line.split(",")]
            try:
                ts = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                rows.append((ts, *(float(x) for x in parts[1:1 + len(self.fields)])))
            except (ValueError, IndexError):
                continue
        return [r for r in rows if t0 <= r[0] <= t1]
