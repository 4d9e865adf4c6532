"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), eval (settings grids on a
dataset, resumable), distill (self-distilled SFT data), sft (LoRA SFT under a SWAA config), info (environment,
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
    if a.dataset.startswith("synthetic:"):                  # synthetic:<length>[:<n per task>[:<seed>]]
        from .data import make_dataset
        parts = a.dataset.split(":")
        dataset = make_dataset(tok, lengths=(int(parts[1]),), n=int(parts[2]) if len(parts) > 2 else 5,
                               seed=int(parts[3]) if len(parts) > 3 else 0)
    else:
        dataset = a.dataset
    judge = None
    if a.judge_url or a.judge_model:
        from .judge import Judge
        judge = Judge(base_url=a.judge_url, model=a.judge_model, cache_path=Path(a.out) / "judge_cache.jsonl")
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
    d = sub.add_parser("distill", help="self-distilled SFT data: the full-attention model answers, answers scored")
    d.add_argument("--model", default="default", help="model folder or hub id; 'default' = SmolLM2")
    d.add_argument("--dataset", required=True, help="parquet/jsonl path, or synthetic:<length>[:<n per task>[:<seed>]]")
    d.add_argument("--out", required=True, help="output folder: distill.jsonl (resumable), sft_data.jsonl")
    d.add_argument("--n", type=int, default=4, help="sampled answers per prompt")
    d.add_argument("--engine", default="hf")
    d.add_argument("--temperature", type=float, default=0.7)
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
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
