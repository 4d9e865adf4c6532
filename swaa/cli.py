"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), eval (settings grids on a
dataset, resumable; HF or vLLM engine), serve (vLLM's OpenAI server with a SWAA config), info (environment,
backends)."""
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


def _cmd_serve(a, extra) -> int:
    from .integrations.vllm.serve import main as serve_main
    return serve_main(a, extra)


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
    i = sub.add_parser("info", help="versions, device and attention backends")
    i.set_defaults(fn=_cmd_info)
    sv = sub.add_parser("serve", help="vLLM OpenAI-compatible server with a SWAA config (other options go to vLLM)")
    from .integrations.vllm.serve import add_arguments
    add_arguments(sv)
    sv.set_defaults(fn=_cmd_serve, takes_extra=True)
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
