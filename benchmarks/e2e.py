"""End-to-end speed of real model shapes: prefill (time to first token) and decode tokens/s under the paper's speed
grid, with the cost model's prediction next to every measurement.

    python benchmarks/e2e.py --device cuda --out benchmarks/results          # one H200, ~6-8 min (budget 510 s)
    python benchmarks/e2e.py --device cuda --out DIR --quick                  # Qwen3-4B at 32k only, ~1.5 min
    python benchmarks/e2e.py --device cpu --out /tmp/e2e --quick              # toy shapes, seconds (a check)

Random-weight models built on the device from configs written in code (Qwen3-4B, Llama-3.1-8B, Qwen3-30B-A3B; no
hub). First the rates the cost model needs are measured (matmul, copy bandwidth, attention per pattern and length,
non-attention time per token, decode-step overhead), then each (model, length, setting) row: warm-up, median
prefill over 2-3 reps, median of 16 decode steps, peak memory, KV bytes. Rows are appended to
``DIR/e2e_<device>.rows.jsonl`` as they finish and ``DIR/e2e_<device>.json`` is rewritten after each, so a timeout
keeps what finished and a rerun skips it. A row whose predicted time does not fit the remaining ``--budget-s`` is
skipped (and done by the next run). Not a test.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))        # run from anywhere in the checkout

from swaa.speed.costmodel import Rates, get_shape, predict_decode, predict_prefill      # noqa: E402
from swaa.integrations.transformers import compile_blocks                           # noqa: E402
from swaa.store.rows import ResultStore                                                # noqa: E402
from swaa.speed.measure import (build_random_model, measure_rates, random_prompt_ids, speed_settings,  # noqa: E402
                        time_setting)

# (model shape, lengths, grid); the order is the priority: a timeout loses the end of the list
GPU_PLAN = [("qwen3-4b", [32768, 65536, 131072], "full"), ("llama-3.1-8b", [32768, 131072], "reduced"),
            ("qwen3-30b-a3b", [32768], "reduced")]
GPU_QUICK = [("qwen3-4b", [32768], "full")]
CPU_PLAN = [("tiny-qwen3", [128, 256], "full"), ("tiny-moe", [128], "reduced")]
CPU_QUICK = [("tiny-qwen3", [96], "full"), ("tiny-moe", [64], "reduced")]


def _versions() -> dict:
    import transformers
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = None
    return dict(torch=torch.__version__, triton=tv, transformers=transformers.__version__,
                python=platform.python_version())


def device_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    words = torch.cuda.get_device_name(device).split()                 # "NVIDIA H200" -> gpu_h200 (also "H200 NVL")
    return "gpu_" + next((w for w in words if any(c.isdigit() for c in w)), words[-1]).lower()


def write_json(path: Path, header: dict, store: ResultStore) -> None:
    rows = [r for r in store.rows.values() if r.get("kind") == "row"]
    rates = {r["model"]: r["rates"] for r in store.rows.values() if r.get("kind") == "rates"}
    errors = [r for r in store.rows.values() if r.get("kind") == "error"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(header, rates=rates, rows=rows, errors=errors), indent=1) + "\n")
    tmp.replace(path)


def _failed(store: ResultStore, json_path: Path, header: dict, key: str, e: Exception) -> None:
    """Record a failure (under its own key, so that a rerun tries the row again) and print it."""
    msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    print(f"{key}: FAILED {msg}", flush=True)
    store.add(dict(key=f"error|{key}|{time.time():.0f}", kind="error", what=key, error=msg))
    write_json(json_path, header, store)


def _free(gpu: bool) -> None:
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="one model and length (GPU: Qwen3-4B at 32k)")
    ap.add_argument("--budget-s", type=float, default=None, help="skip rows that would end after this (GPU: 510)")
    ap.add_argument("--models", default=None, help="comma list of shapes to keep from the plan")
    ap.add_argument("--decode-steps", type=int, default=None)
    ap.add_argument("--no-graphs", action="store_true",
                    help="decode with HF's eager steps (default on CUDA: GraphDecoder, one CUDA graph per step)")
    ap.add_argument("--eager", action="store_true",
                    help="leave the norms and MLPs eager (default on CUDA: swaa compile_blocks, same for every row)")
    a = ap.parse_args(argv)
    t_start = time.time()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU here; use --device cpu (toy shapes) on this machine")
    gpu = dev.type == "cuda"
    plan = (GPU_QUICK if a.quick else GPU_PLAN) if gpu else (CPU_QUICK if a.quick else CPU_PLAN)
    if a.models:
        keep = a.models.split(",")
        for m in keep:
            get_shape(m)
        plan = [p for p in plan if p[0] in keep]
    budget = a.budget_s if a.budget_s is not None else (510.0 if gpu else 1e9)
    windows, sinks = ((2048, 4096), 100) if gpu else ((16, 32), 4)
    steps = a.decode_steps or (16 if gpu else 4)
    compiled = gpu and not a.eager
    graphs = gpu and not a.no_graphs
    tag = device_tag(dev) + ("_eager" if gpu and not compiled else "") + ("_hostdecode" if gpu and not graphs else "")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / f"e2e_{tag}.rows.jsonl")
    json_path = out / f"e2e_{tag}.json"
    header = dict(benchmark="e2e", device=torch.cuda.get_device_name(dev) if gpu else (platform.processor() or
                  platform.machine()), **_versions(), dtype="bfloat16" if gpu else "float32", batch=1,
                  decode_steps=steps, windows=list(windows), sinks=sinks, compile_blocks=compiled,
                  decode_graphs=graphs,
                  plan=[dict(model=m, lengths=ls, grid=g) for m, ls, g in plan],
                  note="random-weight models; prefill = median over reps of a forward with logits_to_keep=1 into a "
                       "fresh DynamicCache (SinkWindowCache eviction installed by apply_swaa); decode = median of "
                       "greedy steps after 2 warm-up steps; torch.cuda.synchronize around every timed region; "
                       "pred_* from swaa.speed.costmodel with the rates measured first on this machine; compile_blocks: norms, "
                       "MLPs and rotary table under torch.compile (swaa.integrations.transformers.compile_blocks), "
                       "attention eager through the registry, in every row alike; decode_graphs: each decode step "
                       "one CUDA graph replay over a static sink+window cache (swaa.integrations.cuda_graph_decode.GraphDecoder)")
    print(f"e2e on {header['device']} ({tag}); torch {header['torch']}, transformers {header['transformers']}, "
          f"triton {header['triton']}; budget {budget:.0f} s; rows -> {store.path}", flush=True)

    def left() -> float:
        return budget - (time.time() - t_start)

    for name, lengths, grid in plan:
        shape = get_shape(name)
        settings = speed_settings(shape.layers, windows, sinks, reduced=grid == "reduced")
        todo = [(n, c) for n in lengths for c in settings if f"{name}|{n}|{c.mark}" not in store]
        if not todo:
            print(f"{name}: every row done already", flush=True)
            continue
        if left() < 60:
            print(f"{name}: skipped, {left():.0f} s of the budget left", flush=True)
            continue
        t0 = time.time()
        model = None
        try:
            model = build_random_model(shape, dev)
            if compiled:
                compile_blocks(model)
            print(f"{name}: built in {time.time() - t0:.1f} s ({shape.params / 1e9:.2f} B params)", flush=True)
            if f"rates|{name}" in store:
                rates = Rates.from_dict(store[f"rates|{name}"]["rates"])
            else:
                patterns = [(None, 0)] + sorted({(c.sliding_window_size, c.keep_first) for c in settings
                                                 if c.sliding_window_size is not None})
                rates = measure_rates(model, shape, dev, lengths, patterns, linear_n=8192 if gpu else 64,
                                      decode_n=1024 if gpu else 48, evict_window=256 if gpu else 8,
                                      calib_steps=8 if gpu else 2, log=lambda s: print(s, flush=True),
                                      graphs=graphs)
                store.add(dict(key=f"rates|{name}", kind="rates", model=name, rates=rates.to_dict()))
                write_json(json_path, header, store)
        except Exception as e:          # keep going with the next model; the JSON says what failed
            _failed(store, json_path, header, f"{name}|build-or-rates", e)
            del model
            _free(gpu)
            continue
        for n in lengths:
            ids = random_prompt_ids(n, shape.vocab, dev)
            warmed = False
            for cfg in settings:
                key = f"{name}|{n}|{cfg.mark}"
                if key in store:
                    continue
                reps = (2 if n >= 65536 else 3) if gpu else 1
                pp = predict_prefill(shape, cfg, n, rates)["seconds"]
                pd = predict_decode(shape, cfg, n, rates)["seconds"]
                est = (reps + (0 if warmed else 1)) * pp + (steps + 4) * pd + 0.5
                if est > left():
                    print(f"{key}: skipped (predicted {est:.0f} s, {left():.0f} s left); a rerun does it", flush=True)
                    continue
                t1 = time.time()
                try:
                    if not warmed:             # once per (model, length): the allocator and cuBLAS at this size
                        time_setting(model, shape, settings[1] if len(settings) > 1 else cfg, ids, reps=1,
                                     decode_steps=0, warmup_n=None)
                        warmed = True
                        t1 = time.time()
                    row = time_setting(model, shape, cfg, ids, reps=reps, decode_steps=steps,
                                       warmup_n=4096 if gpu else 32, rates=rates, graphs=graphs)
                except Exception as e:       # out of memory, a kernel that does not compile: note it, go on
                    _failed(store, json_path, header, key, e)
                    _free(gpu)
                    continue
                row = dict(key=key, kind="row", model=name, device=header["device"], wall_s=time.time() - t1, **row)
                store.add(row)
                write_json(json_path, header, store)
                print(f"{key}: prefill {row['prefill_s']:.3f} s (pred {row['pred_prefill_s']:.3f}, "
                      f"{100 * row['err_prefill']:+.0f}%), decode {row['decode_step_ms']:.1f} ms/token "
                      f"(pred {row['pred_decode_step_ms']:.1f}, {100 * row['err_decode']:+.0f}%), "
                      f"peak {row['peak_mem_bytes'] / 2**30:.2f} GiB, KV {row['kv_bytes_decode'] / 2**20:.1f} MiB "
                      f"[{time.time() - t_start:.0f} s]", flush=True)
            del ids
        del model
        _free(gpu)
    write_json(json_path, header, store)
    print(f"wrote {json_path} in {time.time() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
