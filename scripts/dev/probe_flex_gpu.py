"""Developer probe (GPU): which flex shapes compile, with and without FORCE_USE_FLEX_ATTENTION."""
import json, os, sys, time, traceback
import torch
from swaa.attention import attention_ref
from swaa.attention import flex as F
res = []
for opts in [None, {"FORCE_USE_FLEX_ATTENTION": True}]:
    for (lq, lk, g, d) in [(113, 113, 4, 64), (113, 113, 1, 64), (1023, 1023, 4, 64), (1, 4099, 4, 128), (127, 4099, 4, 128), (4096, 4096, 4, 128), (113, 113, 3, 64), (17, 17, 3, 64)]:
        q = torch.randn(2, 2 * g, lq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, 2, lk, d, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
        bm = F.make_block_mask(lq, lk, 16, 4, torch.device("cuda"))
        try:
            t = time.time()
            kw = dict(block_mask=bm, enable_gqa=g > 1)
            if opts: kw["kernel_options"] = opts
            out = F._compiled()(q, k, v, **kw)
            err = (out.float() - attention_ref(q, k, v, sliding_window_size=16, keep_first=4).float()).abs().max().item()
            res.append(dict(opts=str(opts), lq=lq, lk=lk, g=g, d=d, ok=True, err=err, s=round(time.time() - t, 1)))
        except Exception as e:
            res.append(dict(opts=str(opts), lq=lq, lk=lk, g=g, d=d, ok=False, err=str(e).splitlines()[0][:200]))
        print(res[-1], flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "probe.json"), "w"), indent=1)
