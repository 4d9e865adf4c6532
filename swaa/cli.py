"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), eval (settings grids on a
dataset, resumable), lazy (LightTransfer layer selection), info (environment, backends)."""
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


def _cmd_eval(a) -> int:
    from .eval import EvalOptions, run_eval
    opts = EvalOptions(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, max_prompt_tokens=a.max_prompt_tokens,
                       sample_first=a.sample_first, cot=a.cot, device=a.device)
    if a.dataset.startswith("synthetic:"):                  # synthetic:<length>[:<n>] for the default tokenizer
        from .data import make_dataset
        from .models import default_model_path
        from transformers import AutoTokenizer
        parts = a.dataset.split(":")
        tok = AutoTokenizer.from_pretrained(a.model[0] if a.model and a.model[0] != "default" else default_model_path())
        dataset = make_dataset(tok, lengths=(int(parts[1]),), n=int(parts[2]) if len(parts) > 2 else 5)
    else:
        dataset = a.dataset
    models = [None if m == "default" else m for m in (a.model or ["default"])]
    judge = None
    if a.judge_url or a.judge_model:
        from pathlib import Path

        from .judge import Judge
        judge = Judge(base_url=a.judge_url, model=a.judge_model, cache_path=Path(a.out) / "judge_cache.jsonl")
    for s in run_eval(models, a.settings, dataset, a.out, engine=a.engine, options=opts, overwrite=a.overwrite,
                      judge=judge):
        print(json.dumps({k: v for k, v in s.items() if k != "key"}))
    return 0


def _cmd_lazy(a) -> int:
    from pathlib import Path

    from .config import SWAAConfig
    from .lazy import interleaved_layers, lazy_config, lazy_layer_freqs
    from .models import load_model
    model, tok = load_model(None if a.model == "default" else a.model, device=a.device)
    if a.dataset.startswith("synthetic:"):                  # synthetic:<length>[:<n per task>], like swaa eval
        from .data import make_dataset
        parts = a.dataset.split(":")
        dataset = make_dataset(tok, lengths=(int(parts[1]),), n=int(parts[2]) if len(parts) > 2 else 5, seed=a.seed)
    else:
        dataset = a.dataset
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
    e.add_argument("--engine", default="hf")
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
    i = sub.add_parser("info", help="versions, device and attention backends")
    i.set_defaults(fn=_cmd_info)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
