"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), eval (settings grids on a
dataset, resumable; HF or vLLM engine), serve (vLLM's OpenAI server with a SWAA config), distill (self-distilled
SFT data), sft (LoRA SFT under a SWAA config), lazy (LightTransfer layer selection), info (environment, backends),
speed (prefill/decode timing grid), advise (best settings for a speed or accuracy target)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_reproduce(a) -> int:
    import time

    from .reproduce import NotebookFailed, run_notebooks
    params = {}
    if a.model:
        params["MODEL"] = a.model
    if a.device:
        params["DEVICE"] = a.device
    t0 = time.time()
    try:
        timings = run_notebooks(a.notebooks or None, smoke=a.smoke, out=a.out, figures=a.figures, parameters=params)
    except NotebookFailed as e:
        print(f"swaa reproduce: {e}", file=sys.stderr)
        return 1
    print(f"swaa reproduce: {len(timings)} notebooks in {time.time() - t0:.0f} s; figures in {a.figures}/")
    return 0


def _cmd_info(a) -> int:
    from .envinfo import environment_report
    for key, value in environment_report().items():
        print(f"{key:18s} {value}")
    return 0


def _dataset_arg(spec: str, get_tok, seed: int = 0):
    """--dataset: a parquet/jsonl path (returned as is) or synthetic:<length>[:<n per task>[:<seed>]], built for
    the tokenizer that ``get_tok()`` returns (called only for synthetic data)."""
    if not spec.startswith("synthetic:"):
        return spec
    from .data import make_dataset
    parts = spec.split(":")
    return make_dataset(get_tok(), lengths=(int(parts[1]),), n=int(parts[2]) if len(parts) > 2 else 5,
                        seed=int(parts[3]) if len(parts) > 3 else seed)


def _judge_arg(a):
    """The optional LLM judge of --judge-url / --judge-model, caching under --out."""
    if not (a.judge_url or a.judge_model):
        return None
    from pathlib import Path

    from .judge import Judge
    return Judge(base_url=a.judge_url, model=a.judge_model, cache_path=Path(a.out) / "judge_cache.jsonl")


def _cmd_eval(a) -> int:
    from .eval import EvalOptions, run_eval
    opts = EvalOptions(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, max_prompt_tokens=a.max_prompt_tokens,
                       sample_first=a.sample_first, cot=a.cot, device=a.device)

    def default_tok():
        from transformers import AutoTokenizer

        from .models import default_model_path
        return AutoTokenizer.from_pretrained(a.model[0] if a.model and a.model[0] != "default" else default_model_path())
    dataset = _dataset_arg(a.dataset, default_tok)
    models = [None if m == "default" else m for m in (a.model or ["default"])]
    judge = _judge_arg(a)
    for s in run_eval(models, a.settings, dataset, a.out, engine=a.engine, options=opts, overwrite=a.overwrite,
                      judge=judge):
        print(json.dumps({k: v for k, v in s.items() if k != "key"}))
    return 0


def _cmd_serve(a, extra) -> int:
    from .integrations.vllm.serve import main as serve_main
    return serve_main(a, extra)


def _cmd_speed(a) -> int:
    from pathlib import Path

    from .config import SWAAConfig
    from .costmodel import SHAPES
    from .speed import build_random_model, measure_rates, run_speed_grid, speed_settings
    windows = [int(x) for x in a.windows.split(",")]
    lengths = [int(x) for x in a.lengths.split(",")]
    if a.model in SHAPES:                                   # a named shape: random weights, built on the device
        model, name = build_random_model(SHAPES[a.model], a.device), a.model
    else:
        from .models import load_model
        model, _ = load_model(None if a.model == "default" else a.model, device=a.device)
        name = "default" if a.model == "default" else Path(a.model).name
    if a.compile_blocks:
        from .integrations.transformers import compile_blocks
        compile_blocks(model)
        name += "_compiled"
    settings = speed_settings(model.config.num_hidden_layers, windows, a.sinks, reduced=a.reduced)
    rates = None
    if a.predict:
        from .costmodel import ModelShape
        shape = ModelShape.from_config(model.config, name=name)
        pats = [(None, 0)] + sorted({(c.sliding_window_size, c.keep_first) for c in settings if not c.is_full})
        rates = measure_rates(model, shape, a.device, lengths, pats, linear_n=min(lengths), decode_n=min(lengths),
                              evict_window=max(2, min(windows) // 2))
    out = Path(a.out) / f"speed_{name}_{a.device}.jsonl"
    rows = run_speed_grid(model, settings, lengths, out, model_name=name, reps=a.reps, decode_steps=a.decode_steps,
                          rates=rates)
    full = {r["n"]: r for r in rows if r["mark"] == "full"}
    print(f"{'n':>7} {'setting':48s} {'prefill s':>9} {'x full':>6} {'decode ms':>9} {'x full':>6} {'KV MiB':>8}")
    for r in rows:
        f = full.get(r["n"], r)
        print(f"{r['n']:>7} {r['mark']:48s} {r['prefill_s']:9.3f} {f['prefill_s'] / r['prefill_s']:6.2f} "
              f"{r['decode_step_ms']:9.2f} {f['decode_step_ms'] / r['decode_step_ms']:6.2f} "
              f"{r['kv_bytes_decode'] / 2**20:8.2f}")
    print(f"rows in {out} (a rerun skips them)")
    return 0


def _h200_rates(shape_name: str) -> str:
    """The committed H200 rates: the end-to-end run's when it measured this shape, else the attention benchmark."""
    from pathlib import Path
    res = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    e2e = res / "e2e_gpu_h200.json"
    if e2e.exists() and shape_name in json.loads(e2e.read_text()).get("rates", {}):
        return str(e2e)
    return str(res / "attention_gpu_h200.json")


def _cmd_advise(a) -> int:
    from .tradeoff import advise, load_eval, load_speed, predicted_rows, tradeoff_table
    if a.speed is None and a.shape is None:
        raise SystemExit("swaa advise: give --speed FILE (benchmarks/e2e.py or swaa speed results) or --shape NAME "
                         "--length N (the cost model alone)")
    if a.speed is not None:
        speed = load_speed(a.speed, a.model, a.length)
    else:
        from .config import load_settings
        from .costmodel import get_shape, load_rates
        from .speed import speed_settings
        if a.length is None:
            raise SystemExit("swaa advise --shape needs --length (tokens), e.g. --length 131072")
        shape = get_shape(a.shape)
        settings = ([c for c, _ in load_settings(a.settings)] if a.settings
                    else speed_settings(shape.layers))
        speed = predicted_rows(shape, settings, a.length, load_rates(a.rates or _h200_rates(shape.name), shape))
    metric = a.metric or ("answer_nll_mean" if a.eval else "attention_kept")
    if a.eval is None and metric != "attention_kept":
        raise SystemExit(f"swaa advise: --metric {metric} needs --eval FILE with that column")
    points = tradeoff_table(load_eval(a.eval) if a.eval else None, speed, metric=metric, time=a.time,
                            gen_tokens=a.gen_tokens)
    if a.eval is None:
        print("no --eval results: accuracy proxy = attention_kept (fraction of full attention's pairs kept)")
    print(f"{'setting':50s} {a.time + ' s':>10} {'speedup':>8} {metric:>16} {'change':>8} pareto")
    for p in sorted(points, key=lambda p: p["seconds"]):
        print(f"{p['mark']:50s} {p['seconds']:10.4f} {p['speedup']:8.2f} {p[metric]:16.4f} {p['delta']:+8.4f} "
              f"{'*' if p['pareto'] else ''}")
    best = advise(points, metric=metric, min_speedup=a.min_speedup, max_loss=a.max_loss)
    if not best:
        print("no setting on the Pareto front meets the target; relax --min-speedup / --max-nll-increase")
        return 1
    print("best: " + ", ".join(p["mark"] for p in best[:a.top]))
    return 0


def _cmd_lazy(a) -> int:
    from pathlib import Path

    from .config import SWAAConfig
    from .lazy import interleaved_layers, lazy_config, lazy_layer_freqs
    from .models import load_model
    model, tok = load_model(None if a.model == "default" else a.model, device=a.device)
    dataset = _dataset_arg(a.dataset, lambda: tok, seed=a.seed)
    out = Path(a.out)
    name = "default" if a.model == "default" else a.model.rstrip("/").split("/")[-1]
    res = lazy_layer_freqs(model, tok, dataset, w_sink=a.w_sink, w_recent=a.w_recent, w_last=a.w_last,
                           top_p=a.top_p, n=a.n, rows_path=out / f"{name}_lazy_rows.jsonl",
                           out=out / f"{name}_lazy_layers_freq.json", model_name=name)
    base = SWAAConfig(sliding_window_size=a.window or a.w_recent, keep_first=a.w_sink if a.keep_first is None
                      else a.keep_first, force_fa_decode=a.fa_decode)
    cfg = lazy_config(res, a.ratio, base)
    n = res["num_layers"]
    inter = SWAAConfig(**{**base.to_dict(), "non_sliding_layers": interleaved_layers(n, len(cfg.non_sliding_layers))})
    (out / f"{name}_lazy_config.json").write_text(json.dumps(
        [{"swaa_config": c.to_dict(), "model_list": [a.model]} for c in (cfg, inter)], indent=1) + "\n")
    print(f"{res['n_used']} samples used, {res['n_skipped']} skipped (shorter than {res['min_length']} tokens)")
    print("lazy frequency per layer: " + " ".join(f"{k}:{v:.2f}" for k, v in res["freq"].items()))
    print(f"lazy config ({a.ratio:.0%} of {n} layers sliding): {cfg.mark} non_sliding_layers={cfg.non_sliding_layers}")
    print(f"written: {out}/{name}_lazy_layers_freq.json, {name}_lazy_config.json (lazy + interleaved, for swaa eval)")
    return 0


def _swaa_arg(text: str, setting: str | None = None):
    """--swaa: a JSON object, or a config / settings-list JSON file (a list needs --setting: an index or a mark)."""
    from pathlib import Path

    from .config import SWAAConfig, load_settings
    if text.lstrip().startswith("{"):
        return SWAAConfig.from_dict(json.loads(text))
    path = Path(text)
    if not path.exists():
        raise ValueError(f"--swaa {text!r} is neither a JSON object nor an existing file; pass e.g. "
                         "'{\"sliding_window_size\": 2048, \"keep_first\": 100, \"force_fa_decode\": true}'")
    raw = json.loads(path.read_text())
    if not isinstance(raw, list):
        return SWAAConfig.from_dict(raw.get("swaa_config", raw))
    cfgs = [c for c, _ in load_settings(path)]
    marks = [c.mark for c in cfgs]
    if setting is None and len(cfgs) == 1:
        return cfgs[0]
    if setting is not None and setting.isdigit() and int(setting) < len(cfgs):
        return cfgs[int(setting)]
    if setting in marks:
        return cfgs[marks.index(setting)]
    raise ValueError(f"--swaa {text} lists {len(cfgs)} settings; choose one with --setting <index or mark> "
                     f"(got {setting!r}); marks: {marks}")


def _read_rows(path: str):
    import pandas as pd
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".jsonl", ".json")):
        return pd.read_json(path, lines=path.endswith(".jsonl"))
    raise ValueError(f"--data {path!r}: expected a .jsonl or .parquet file with prompt and response columns "
                     "(swaa distill writes OUT/sft_data.jsonl)")


def _cmd_distill(a) -> int:
    from pathlib import Path

    from .distill import select_distilled, self_distill
    from .models import load_model
    model, tok = load_model(None if a.model == "default" else a.model, device=a.device)
    dataset = _dataset_arg(a.dataset, lambda: tok)
    judge = _judge_arg(a)
    rows = self_distill(model, tok, dataset, a.out, n=a.n, engine=a.engine, temperature=a.temperature,
                        top_p=a.top_p, max_new_tokens=a.max_new_tokens, seed=a.seed, judge=judge,
                        max_prompt_tokens=a.max_prompt_tokens, batch_size=a.batch_size)
    data = select_distilled(rows, threshold=a.threshold, per_prompt=a.per_prompt or None)
    target = Path(a.out) / "sft_data.jsonl"
    data.to_json(target.with_suffix(".tmp"), orient="records", lines=True)
    target.with_suffix(".tmp").replace(target)
    print(json.dumps(dict(data.attrs, data=str(target))))
    return 0


def _cmd_sft(a) -> int:
    from pathlib import Path

    from accelerate import Accelerator

    from .models import load_model
    from .sft import SFTConfig, merge_and_save, train_sft
    cfg = SFTConfig(r=a.r, alpha=a.alpha, target_modules=tuple(a.target_modules.split(",")), rslora=not a.no_rslora,
                    dropout=a.dropout, lr=a.lr, warmup_ratio=a.warmup_ratio, batch_size=a.batch_size, epochs=a.epochs,
                    max_steps=a.max_steps, max_length=a.max_length, gradient_checkpointing=a.gradient_checkpointing,
                    save_every=a.save_every, seed=a.seed, response_column=a.response_column)
    swaa = _swaa_arg(a.swaa, a.setting)
    accelerator = Accelerator()
    model, tok = load_model(None if a.model == "default" else a.model, device=a.device or accelerator.device)
    run = train_sft(model, tok, _read_rows(a.data), a.out, swaa=swaa, config=cfg, resume=not a.no_resume,
                    accelerator=accelerator)
    if accelerator.is_main_process:
        merged = None if a.no_merge else merge_and_save(run.model, tok, Path(a.out) / "merged")
        print(json.dumps(dict(steps=run.steps, resumed_from=run.resumed_from, merged=str(merged) if merged else None,
                              **{k: v for k, v in run.report.items() if k != "fingerprint"})))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="swaa", description="Sliding Window Attention Adaptation workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reproduce", help="run the main job headless and write figures/")
    r.add_argument("--out", default="out", help="working folder for resumable results (git-ignored)")
    r.add_argument("--figures", default="figures")
    r.add_argument("notebooks", nargs="*", help="notebook names (default: all, in order)")
    r.add_argument("--smoke", action="store_true", help="SMOKE=True: tiny sizes, seconds per notebook")
    r.add_argument("--model", default=None, help="MODEL parameter: folder or hub id (default: SmolLM2-135M-Instruct)")
    r.add_argument("--device", default=None, help="DEVICE parameter (default: cpu)")
    r.set_defaults(fn=_cmd_reproduce)
    e = sub.add_parser("eval", help="evaluate models under a settings grid on a dataset (resumable)")
    e.add_argument("--model", action="append", help="model folder or hub id; 'default' = SmolLM2 (repeatable)")
    e.add_argument("--dataset", required=True, help="parquet/jsonl path, or synthetic:<length>[:<n per task>]")
    e.add_argument("--settings", required=True, help="settings-list JSON (see data/settings/)")
    e.add_argument("--out", required=True, help="output folder (rows, parquet per setting, results.jsonl)")
    e.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="hf (transformers) or vllm (the plugin)")
    e.add_argument("--max-new-tokens", type=int, default=32)
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--max-prompt-tokens", type=int, default=None)
    e.add_argument("--sample-first", type=int, default=None)
    e.add_argument("--cot", action="store_true")
    e.add_argument("--device", default="cpu")
    e.add_argument("--overwrite", action="store_true", help="reuse an output folder made for other data/settings")
    e.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL of an LLM judge (or SWAA_JUDGE_URL)")
    e.add_argument("--judge-model", default=None, help="the judge's model name (or SWAA_JUDGE_MODEL)")
    e.set_defaults(fn=_cmd_eval)
    lz = sub.add_parser("lazy", help="LightTransfer: lazy ratios per layer -> which layers slide (resumable)")
    lz.add_argument("--model", default="default", help="model folder or hub id; 'default' = SmolLM2")
    lz.add_argument("--dataset", required=True, help="parquet/jsonl path, or synthetic:<length>[:<n per task>]")
    lz.add_argument("--out", required=True, help="output folder (per-sample rows, *_lazy_layers_freq.json, config)")
    lz.add_argument("--n", type=int, default=None, help="use the first N samples (default: all)")
    lz.add_argument("--seed", type=int, default=1, help="seed of synthetic data (eval uses 0: calibrate on other rows)")
    lz.add_argument("--w-sink", type=int, default=4, help="first keys counted as kept (LightTransfer: 4)")
    lz.add_argument("--w-recent", type=int, default=64, help="recent keys counted as kept, query included (paper: 1020)")
    lz.add_argument("--w-last", type=int, default=16, help="last queries scored (paper: 64)")
    lz.add_argument("--top-p", type=float, default=0.5, help="fraction of layers voted lazy per sample")
    lz.add_argument("--ratio", type=float, default=0.5, help="fraction of layers made sliding in the config")
    lz.add_argument("--window", type=int, default=None, help="sliding window of lazy layers (default: --w-recent)")
    lz.add_argument("--keep-first", type=int, default=None, help="sinks of lazy layers (default: --w-sink)")
    lz.add_argument("--fa-decode", action="store_true", help="force_fa_decode in the produced config")
    lz.add_argument("--device", default="cpu")
    lz.set_defaults(fn=_cmd_lazy)
    d = sub.add_parser("distill", help="self-distilled SFT data: the full-attention model answers, answers scored")
    d.add_argument("--model", default="default", help="model folder or hub id; 'default' = SmolLM2")
    d.add_argument("--dataset", required=True, help="parquet/jsonl path, or synthetic:<length>[:<n per task>[:<seed>]]")
    d.add_argument("--out", required=True, help="output folder: distill.jsonl (resumable), sft_data.jsonl")
    d.add_argument("--n", type=int, default=4, help="sampled answers per prompt")
    d.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                   help="hf (transformers) or vllm (one engine on the model's folder, full attention)")
    d.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (with --n 1)")
    d.add_argument("--top-p", type=float, default=0.95)
    d.add_argument("--max-new-tokens", type=int, default=48)
    d.add_argument("--max-prompt-tokens", type=int, default=None)
    d.add_argument("--batch-size", type=int, default=4, help="prompts sampled together")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threshold", type=float, default=1.0, help="keep answers scoring at least this")
    d.add_argument("--per-prompt", type=int, default=1, help="answers kept per prompt (0 = all that pass)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL of an LLM judge (or SWAA_JUDGE_URL)")
    d.add_argument("--judge-model", default=None, help="the judge's model name (or SWAA_JUDGE_MODEL)")
    d.set_defaults(fn=_cmd_distill)
    t = sub.add_parser("sft", help="LoRA SFT under a SWAA config (resumable), merged model saved with its config")
    t.add_argument("--model", default="default", help="model folder or hub id; 'default' = SmolLM2")
    t.add_argument("--data", required=True, help=".jsonl/.parquet with prompt and response columns")
    t.add_argument("--swaa", required=True, help="SWAAConfig as JSON, or a settings/config JSON file (first entry)")
    t.add_argument("--setting", default=None, help="with a settings-list file: the entry's index or mark")
    t.add_argument("--out", required=True, help="output folder: loss.jsonl, checkpoints/, adapter/, merged/")
    t.add_argument("--r", type=int, default=16)
    t.add_argument("--alpha", type=int, default=32)
    t.add_argument("--target-modules", default="q_proj,k_proj,v_proj")
    t.add_argument("--no-rslora", action="store_true")
    t.add_argument("--dropout", type=float, default=0.05)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--warmup-ratio", type=float, default=0.05)
    t.add_argument("--batch-size", type=int, default=4, help="per process")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--max-length", type=int, default=2048, help="longer examples are dropped (and counted)")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--save-every", type=int, default=50)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--response-column", default="response", help="'answer' trains on the reference answers")
    t.add_argument("--no-resume", action="store_true", help="start over, removing old checkpoints")
    t.add_argument("--no-merge", action="store_true")
    t.add_argument("--device", default=None, help="default: the accelerator's device")
    t.set_defaults(fn=_cmd_sft)
    i = sub.add_parser("info", help="versions, device and attention backends")
    i.set_defaults(fn=_cmd_info)
    sv = sub.add_parser("serve", help="vLLM OpenAI-compatible server with a SWAA config (other options go to vLLM)")
    from .integrations.vllm.serve import add_arguments
    add_arguments(sv)
    sv.set_defaults(fn=_cmd_serve, takes_extra=True)
    sp = sub.add_parser("speed", help="time prefill and decode under the speed grid (default model on CPU)")
    sp.add_argument("--model", default="default", help="'default', a folder / hub id, or a shape name "
                    "(qwen3-4b, llama-3.1-8b, qwen3-30b-a3b: random weights)")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--lengths", default="1024,2048", help="comma list of prompt lengths")
    sp.add_argument("--windows", default="64,128", help="comma list of windows (the first gets the recipes)")
    sp.add_argument("--sinks", type=int, default=4)
    sp.add_argument("--reduced", action="store_true", help="full, W + sinks + FA decode, + half the layers full")
    sp.add_argument("--reps", type=int, default=2)
    sp.add_argument("--decode-steps", type=int, default=8)
    sp.add_argument("--predict", action="store_true", help="measure the cost model's rates first; rows get pred_*")
    sp.add_argument("--compile-blocks", action="store_true", help="torch.compile the norms, MLPs and rotary table "
                    "(attention stays eager): what a lean model adds around the kernels (results file *_compiled)")
    sp.add_argument("--out", default="out/speed")
    sp.set_defaults(fn=_cmd_speed)
    ad = sub.add_parser("advise", help="the best settings for a speed or accuracy target")
    ad.add_argument("--speed", default=None, help="speed results: benchmarks/e2e.py JSON or swaa speed JSONL")
    ad.add_argument("--eval", default=None, help="eval results: CSV with 'mark' or run_eval results.jsonl")
    ad.add_argument("--model", default=None, help="which model's rows of --speed")
    ad.add_argument("--length", type=int, default=None, help="which context length (tokens)")
    ad.add_argument("--shape", default=None, help="cost model alone: qwen3-4b, llama-3.1-8b, qwen3-30b-a3b")
    ad.add_argument("--settings", default=None, help="settings-list JSON for --shape (default: the speed grid)")
    ad.add_argument("--rates", default=None, help="rates for --shape: benchmarks/e2e.py or attention.py JSON "
                    "(default: the committed H200 results)")
    ad.add_argument("--metric", default=None, help="answer_nll_mean (default with --eval), contains, ...")
    ad.add_argument("--time", default="prefill", choices=["prefill", "decode", "total"])
    ad.add_argument("--gen-tokens", type=int, default=256, help="decode steps counted by --time total")
    ad.add_argument("--min-speedup", type=float, default=None, help="e.g. 1.5: at least 1.5x faster than full")
    ad.add_argument("--max-nll-increase", "--max-loss", dest="max_loss", type=float, default=None,
                    help="e.g. 0.1: lose at most this much of the metric against full attention")
    ad.add_argument("--top", type=int, default=3)
    ad.set_defaults(fn=_cmd_advise)
    a, extra = ap.parse_known_args(argv)
    if extra and not getattr(a, "takes_extra", False):
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return a.fn(a, extra) if getattr(a, "takes_extra", False) else a.fn(a)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except ValueError as e:                     # bad input: the message names the value and the fix
        print(f"swaa {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
