"""End-to-end speed: time to first token (prefill) and decode tokens/s of a model under each SWAA setting.

Honest timing in the style of gpt-fast: warm-up runs first (kernel compilation, allocator), every timed region is
closed by ``torch.cuda.synchronize()`` on CUDA, and medians over repetitions are reported. Prefill keeps one logit
row (``logits_to_keep=1``) and fills a fresh ``DynamicCache`` (into which ``apply_swaa``'s hook installs the
sink+window eviction); decode then runs greedy steps on that cache. :func:`measure_rates` times the pieces the
cost model (:mod:`swaa.speed.costmodel`) needs on the machine at hand: a matmul, the copy bandwidth, attention per
pattern and length, the non-attention prefill time per token and the fixed decode-step cost per layer.
Layout: token ids (1, n); caches as in :mod:`swaa.integrations.cache`.
"""
from __future__ import annotations

import gc
import statistics
import time

import torch

from ..config import SWAAConfig
from .costmodel import ModelShape, Rates, decode_cost, predict_decode, predict_prefill, prefill_cost

__all__ = ["speed_settings", "build_random_model", "random_prompt_ids", "time_prefill", "time_decode",
           "measure_rates", "time_setting", "run_speed_grid", "cache_kv_bytes", "memory_bytes"]


def speed_settings(num_layers: int, windows=(2048, 4096), sinks: int = 100, reduced: bool = False) -> list[SWAAConfig]:
    """The paper's speed grid: full; SWA W1 and W2; W1 + sinks; + FA decode; + half / a quarter of layers full.

    ``reduced``: full, W1 + sinks + FA decode, and + half of the layers full (for the larger models).
    """
    if not windows or any(w < 1 for w in windows):
        raise ValueError(f"windows={windows!r}: give one or more window sizes >= 1, e.g. (2048, 4096)")
    w = windows[0]
    recipe = dict(sliding_window_size=w, keep_first=sinks, force_fa_decode=True)
    half = SWAAConfig(**recipe, non_sliding_layers=list(range(1, num_layers, 2)))
    quarter = SWAAConfig(**recipe, non_sliding_layers=list(range(3, num_layers, 4)))
    if reduced:
        return [SWAAConfig(), SWAAConfig(**recipe), half]
    return ([SWAAConfig()] + [SWAAConfig(sliding_window_size=x) for x in windows]
            + [SWAAConfig(sliding_window_size=w, keep_first=sinks), SWAAConfig(**recipe), half, quarter])


def build_random_model(shape: ModelShape, device="cpu", dtype=None):
    """A random-weight model of ``shape``, built directly on ``device`` (bf16 on CUDA, fp32 on CPU)."""
    from transformers import AutoModelForCausalLM
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shape.hf_config(), dtype=dtype)
    return model.eval()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cache_kv_bytes(cache) -> int:
    """Bytes of keys + values a cache holds now."""
    return sum(l.keys.numel() * l.keys.element_size() * 2 for l in cache.layers
               if getattr(l, "keys", None) is not None)


def memory_bytes(device) -> dict:
    """Peak allocated bytes since the last reset on CUDA; the process's resident set size on CPU."""
    if torch.device(device).type == "cuda":
        return dict(peak_mem_bytes=int(torch.cuda.max_memory_allocated()), mem_kind="cuda_max_allocated")
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * 4096
    except OSError:
        rss = None
    return dict(peak_mem_bytes=rss, mem_kind="cpu_rss")


@torch.no_grad()
def _prefill(model, ids):
    from transformers import DynamicCache
    out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[:, -1:].argmax(-1)


@torch.no_grad()
def time_prefill(model, ids, reps: int = 3, warmup: int = 1) -> dict:
    """Median seconds of a prefill (``logits_to_keep=1``, fresh cache) over ``reps`` after ``warmup`` runs.

    Returns the times, the peak memory of the timed runs, and the last run's cache and next token."""
    dev = ids.device
    for _ in range(warmup):
        _prefill(model, ids)
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, cache, tok = [], None, None
    for _ in range(reps):
        cache = tok = None
        if dev.type == "cuda":
            gc.collect()                                   # frees the previous run's cache before the next
        _sync(dev)
        t0 = time.perf_counter()
        cache, tok = _prefill(model, ids)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return dict(prefill_s=statistics.median(times), prefill_all_s=[round(t, 5) for t in times],
                kv_bytes_prefill=cache_kv_bytes(cache), **memory_bytes(dev), cache=cache, token=tok)


@torch.no_grad()
def time_decode(model, cache, token, steps: int = 16, warmup: int = 2, graphs: bool = False) -> dict:
    """Median seconds of one greedy decode step on ``cache`` (``warmup`` steps first, not timed).

    ``graphs``: decode through :class:`swaa.integrations.cuda_graph_decode.GraphDecoder` (the cache copied into static
    buffers; each step one CUDA graph replay on CUDA, the same static step eagerly elsewhere)."""
    dev = token.device
    if graphs:
        return _time_graph_decode(model, cache, token, steps, warmup)
    times = []
    kv_max = 0
    for i in range(warmup + steps):
        _sync(dev)
        t0 = time.perf_counter()
        out = model(token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        kv_max = max(kv_max, cache_kv_bytes(cache))
    step = statistics.median(times) if times else float("nan")
    return dict(decode_step_ms=step * 1e3, decode_tok_s=1.0 / step if times else None, decode_steps=steps,
                kv_bytes_decode=kv_max, tokens_seen=cache.get_seq_length())


def _time_graph_decode(model, cache, token, steps: int, warmup: int) -> dict:
    from ..integrations.cuda_graph_decode import GraphDecoder
    dev = token.device
    dec = GraphDecoder(model, cache, token, max_new_tokens=warmup + steps + 1, warmup=warmup)
    times = []
    for i in range(steps + max(0, warmup - dec.done)):
        _sync(dev)
        t0 = time.perf_counter()
        dec.step()
        _sync(dev)
        if dec.done > warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times) if times else float("nan")
    row = dict(decode_step_ms=step * 1e3, decode_tok_s=1.0 / step if times else None, decode_steps=len(times),
               kv_bytes_decode=dec.cache.nbytes, tokens_seen=dec.cache.seen, decode_graphed=dec.graph is not None,
               decode_graph_note=dec.reason)
    del dec
    return row


def _timeit(fn, device, warmup=2, reps=5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_prompt_ids(n, vocab, device, seed=0):
    """(1, n) random token ids (fixed seed), away from the special tokens at the start of most vocabularies."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(min(100, vocab - 1), min(vocab, 20000), (1, n), generator=g).to(device)


@torch.no_grad()
def measure_rates(model, shape: ModelShape, device, lengths, patterns, *, linear_n: int = 8192,
                  decode_n: int = 1024, evict_window: int = 256, calib_steps: int = 8, log=print,
                  graphs: bool = False) -> Rates:
    """Measure what :mod:`swaa.speed.costmodel` needs for ``model`` on ``device`` (a few seconds on an H200).

    ``patterns``: (window, keep_first) pairs to time attention for, at every length in ``lengths``
    (window None = full). The non-attention time per token comes from a full-attention prefill of ``linear_n``
    tokens less its predicted attention; the per-layer decode overheads from decode steps at a ``decode_n``
    cache under full attention and under a window of ``evict_window`` (every layer evicting).
    """
    from ..attention import swaa_attention
    from ..attention.masks import visible_pairs
    from ..integrations.transformers import apply_swaa
    dev = torch.device(device)
    dtype = next(model.parameters()).dtype
    bp = next(model.parameters()).element_size()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    m = min(linear_n, 8192)
    a = torch.randn(m, shape.hidden, device=dev, dtype=dtype)
    b = torch.randn(shape.hidden, shape.intermediate or shape.moe_intermediate * shape.active_experts,
                    device=dev, dtype=dtype)
    mm = 2 * a.shape[0] * b.shape[0] * b.shape[1] / _timeit(lambda: a @ b, dev) / 1e12
    x = torch.empty((1 << 30) // 2 if dev.type == "cuda" else (1 << 25), dtype=torch.bfloat16, device=dev)
    y = torch.empty_like(x)
    bw = 2 * x.numel() * 2 / _timeit(lambda: y.copy_(x), dev) / 1e9
    del a, b, x, y
    log(f"rates {shape.name}: matmul {mm:.1f} TFLOP/s, copy {bw:.0f} GB/s")
    rates = Rates(device=name, matmul_tflops=mm, bandwidth_gbps=bw, overlap=dev.type == "cuda", decode_graphs=graphs)
    for n in sorted(set(lengths) | {linear_n}):
        q = torch.randn(1, shape.heads, n, shape.head_dim, device=dev, dtype=dtype)
        k = torch.randn(1, shape.kv_heads, n, shape.head_dim, device=dev, dtype=dtype)
        v = torch.randn_like(k)
        for w, s in (patterns if n in lengths else [(None, 0)]):
            s = s if w is not None else 0
            from ..attention import resolve_backend
            be = resolve_backend("auto", q, k, v, window=w).name
            t = _timeit(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s), dev,
                        warmup=2 if dev.type == "cuda" else 1, reps=3 if n > 65536 or dev.type != "cuda" else 5)
            tf = 4 * visible_pairs(n, n, w, s) * shape.head_dim * shape.heads / t / 1e12
            rates.attention.append(dict(n=n, window=w, keep_first=s, backend=be, ms=round(t * 1e3, 4),
                                        tflops=tf))
            log(f"  attention n={n} W={w} S={s} {be}: {t * 1e3:.3f} ms, {tf:.1f} TFLOP/s")
        del q, k, v
    # non-attention prefill time per token, from a short full-attention prefill
    apply_swaa(model, SWAAConfig())
    ids = random_prompt_ids(linear_n, shape.vocab, dev)
    t = _timeit(lambda: _prefill(model, ids), dev, warmup=1, reps=3 if dev.type == "cuda" else 1)
    attn = predict_prefill(shape, SWAAConfig(), linear_n, rates, bytes_per=bp)["attention_s"]
    rates.linear_s_per_token = max(t - attn, 0.0) / linear_n
    # fixed per-layer decode-step cost: measured step less the bytes it moves
    for kind, cfg in (("keep", SWAAConfig()), ("evict", SWAAConfig(sliding_window_size=evict_window))):
        apply_swaa(model, cfg, kv_eviction=True)
        cache, tok = _prefill(model, random_prompt_ids(decode_n, shape.vocab, dev))
        step = time_decode(model, cache, tok, steps=calib_steps, warmup=2, graphs=graphs)["decode_step_ms"] / 1e3
        moved = predict_decode(shape, cfg, decode_n + 5, Rates(name, mm, bw, decode_graphs=graphs),
                               bytes_per=bp)["seconds"]                                          # bytes only
        # CUDA without graphs: the step is host-bound at a short cache (the measured step is the host's time);
        # CPU, or CUDA graphs: what is not bytes (graphs: the kernels' fixed time per layer)
        host_bound = rates.overlap and not graphs
        rates.decode_overhead_s[kind] = (step if host_bound else max(step - moved, 0.0)) / shape.layers
        del cache
    if rates.decode_overhead_s["evict"] < rates.decode_overhead_s["keep"]:
        rates.decode_overhead_s["evict"] = rates.decode_overhead_s["keep"]
    lin_flops = 2 * (shape.attn_params + shape.mlp_params_active) * shape.layers
    eff = lin_flops * 1e-12 / max(rates.linear_s_per_token, 1e-15)
    log(f"  prefill outside attention {rates.linear_s_per_token * 1e6:.2f} us/token ({eff:.1f} TFLOP/s); "
        f"decode overhead per layer keep {rates.decode_overhead_s['keep'] * 1e3:.3f} ms, "
        f"evict {rates.decode_overhead_s['evict'] * 1e3:.3f} ms")
    return rates


def time_setting(model, shape: ModelShape, cfg: SWAAConfig, ids, *, reps=3, decode_steps=16,
                 warmup_n: int | None = 4096, rates: Rates | None = None, graphs: bool = False) -> dict:
    """Prefill and decode of ``ids`` under ``cfg`` (warm-up at ``warmup_n`` tokens compiles the kernels), with the
    cost model's prediction and relative error when ``rates`` are given. Returns one result row (no tensors)."""
    from ..integrations.transformers import apply_swaa
    dev, n = ids.device, ids.shape[1]
    apply_swaa(model, cfg, kv_eviction=True)
    if warmup_n:
        c, t = _prefill(model, ids[:, :min(warmup_n, n)])
        time_decode(model, c, t, steps=0, warmup=2)
        del c
    p = time_prefill(model, ids, reps=reps, warmup=0)
    cache, tok = p.pop("cache"), p.pop("token")
    d = time_decode(model, cache, tok, steps=decode_steps, warmup=2, graphs=graphs and decode_steps > 0)
    del cache
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    bp = next(model.parameters()).element_size()
    n_dec = n + 2 + decode_steps // 2                      # the median step's cache length
    cost = decode_cost(shape, cfg, n + 1 + decode_steps, bytes_per=bp)     # the cache after the last step
    pc = prefill_cost(shape, cfg, n)
    row = dict(n=n, mark=cfg.mark, swaa_config=cfg.to_dict(), reps=reps, **p, **d,
               kv_bytes_decode_pred=cost["kv_stored_bytes"], evicting_layers=cost["evicting_layers"],
               flops_prefill=pc["flops"], attn_flops_prefill=pc["attn_flops"],
               attention_kept=pc["attn_flops"] / prefill_cost(shape, None, n)["attn_flops"])
    if rates is not None:
        pp = predict_prefill(shape, cfg, n, rates, bytes_per=bp)
        pd = predict_decode(shape, cfg, n_dec, rates, bytes_per=bp)
        row.update(pred_prefill_s=pp["seconds"], pred_roofline_s=pp["roofline_s"],
                   pred_decode_step_ms=pd["seconds"] * 1e3,
                   err_prefill=pp["seconds"] / row["prefill_s"] - 1,
                   err_decode=pd["seconds"] * 1e3 / row["decode_step_ms"] - 1)
    return row


def run_speed_grid(model, settings, lengths, results, *, model_name: str = "default", reps: int = 2,
                   decode_steps: int = 8, rates: Rates | None = None, warmup_n: int | None = 256,
                   progress: bool = True, graphs: bool = False) -> list[dict]:
    """:func:`time_setting` for every (length, setting), resumable in ``results`` (JSONL): a rerun skips finished
    rows. ``model`` is a loaded model (the default model on CPU in ``swaa speed`` and notebook 04)."""
    from ..store.fingerprint import model_fingerprint
    from ..store.rows import run_resumable
    if not lengths or any(int(n) < 2 for n in lengths):
        raise ValueError(f"lengths={lengths!r}: give prompt lengths >= 2 tokens, e.g. [1024, 2048]")
    shape = ModelShape.from_config(model.config, name=model_name)
    dev = next(model.parameters()).device
    items = [(int(n), c) for n in lengths for c in settings]

    def compute(item):
        n, cfg = item
        ids = random_prompt_ids(n, shape.vocab, dev)
        row = time_setting(model, shape, cfg, ids, reps=reps, decode_steps=decode_steps,
                           warmup_n=warmup_n and min(warmup_n, n), rates=rates, graphs=graphs)
        return dict(kind="row", model=model_name, device=str(dev), **row)

    # the name stays in the key: it tells compiled blocks apart, which the weights do not
    fp = f"{model_name}|{model_fingerprint(model)}|{dev}|graphs={graphs}"
    return run_resumable(results, items, key=lambda it: f"{fp}|{it[0]}|{it[1].to_json()}", compute=compute,
                         progress=progress, desc="speed grid")
