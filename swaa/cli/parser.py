"""The `swaa` command's options: one subparser per subcommand, every value typed (see :mod:`swaa.cli.args`)."""
from __future__ import annotations

import argparse

from .args import Parser, dataset_spec, device, existing_file, number, out_dir, whole, whole_list

__all__ = ["build_parser"]

_MODEL = "model folder or hub id; 'default' = SmolLM2"
_JUDGE_URL = "OpenAI-compatible base URL of an LLM judge (or SWAA_JUDGE_URL); checked before the run"
_TRUNCATE = ("a prompt beyond the model's maximum positions is cut in the middle, keeping its start and end (as "
             "LongBench does), and counted; without it such a prompt stops the run before anything is written")
FRACTION_OPEN = number(0, 1, lo_open=True)        # (0, 1]


def _notebook(name: str) -> str:
    from ..ui.notebooks import NOTEBOOKS
    if name not in NOTEBOOKS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a notebook here; choose from {', '.join(NOTEBOOKS)}")
    return name


def _reproduce(sub) -> None:
    r = sub.add_parser("reproduce", help="run the main job headless and write figures/")
    r.add_argument("--out", type=out_dir, default="out", help="working folder for resumable results (git-ignored)")
    r.add_argument("--figures", type=out_dir, default="figures")
    r.add_argument("notebooks", nargs="*", type=_notebook, help="notebook names (default: all, in order)")
    r.add_argument("--smoke", action="store_true", help="SMOKE=True: tiny sizes, seconds per notebook")
    r.add_argument("--model", default=None, help="MODEL parameter: folder or hub id (default: SmolLM2-135M-Instruct)")
    r.add_argument("--device", type=device, default=None, help="DEVICE parameter (default: cpu)")
    r.add_argument("--notebooks", dest="notebook_dir", default=None, metavar="DIR",
                   help="the folder of the project's notebooks (default: ./notebooks)")


def _eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate models under a settings grid on a dataset (resumable)")
    e.add_argument("--model", action="append", help=_MODEL + " (repeatable)")
    e.add_argument("--dataset", type=dataset_spec, required=True,
                   help="parquet/jsonl path, or synthetic:<length>[:<n per task>]")
    e.add_argument("--settings", type=existing_file, required=True, help="settings-list JSON (see data/settings/)")
    e.add_argument("--out", type=out_dir, required=True, help="output folder (rows, parquet per setting, results.jsonl)")
    e.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="hf (transformers) or vllm (the plugin)")
    e.add_argument("--max-new-tokens", type=whole(1), default=32)
    e.add_argument("--batch-size", type=whole(1), default=4)
    e.add_argument("--max-prompt-tokens", type=whole(1), default=None, help="skip (and count) longer prompts")
    e.add_argument("--truncate-prompts", action="store_true", help=_TRUNCATE)
    e.add_argument("--sample-first", type=whole(1), default=None, help="use the first N rows")
    e.add_argument("--cot", action="store_true")
    e.add_argument("--device", type=device, default="cpu")
    e.add_argument("--overwrite", action="store_true", help="reuse an output folder made for other data/settings")
    e.add_argument("--judge-url", default=None, help=_JUDGE_URL)
    e.add_argument("--judge-model", default=None, help="the judge's model name (or SWAA_JUDGE_MODEL)")


def _lazy(sub) -> None:
    lz = sub.add_parser("lazy", help="LightTransfer: lazy ratios per layer -> which layers slide (resumable)")
    lz.add_argument("--model", default="default", help=_MODEL)
    lz.add_argument("--dataset", type=dataset_spec, required=True,
                    help="parquet/jsonl path, or synthetic:<length>[:<n per task>]")
    lz.add_argument("--out", type=out_dir, required=True,
                    help="output folder (per-sample rows, *_lazy_layers_freq.json, config)")
    lz.add_argument("--n", type=whole(1), default=None, help="use the first N samples (default: all)")
    lz.add_argument("--seed", type=whole(0), default=1,
                    help="seed of synthetic data (eval uses 0: calibrate on other rows)")
    lz.add_argument("--w-sink", type=whole(0), default=4, help="first keys counted as kept (LightTransfer: 4)")
    lz.add_argument("--w-recent", type=whole(1), default=64,
                    help="recent keys counted as kept, query included (paper: 1020)")
    lz.add_argument("--w-last", type=whole(1), default=16, help="last queries scored (paper: 64)")
    lz.add_argument("--top-p", type=FRACTION_OPEN, default=0.5, help="fraction of layers voted lazy per sample")
    lz.add_argument("--ratio", type=number(0, 1), default=0.5, help="fraction of layers made sliding in the config")
    lz.add_argument("--window", type=whole(1), default=None, help="sliding window of lazy layers (default: --w-recent)")
    lz.add_argument("--keep-first", type=whole(0), default=None, help="sinks of lazy layers (default: --w-sink)")
    lz.add_argument("--fa-decode", action="store_true", help="force_fa_decode in the produced config")
    lz.add_argument("--device", type=device, default="cpu")


def _distill(sub) -> None:
    d = sub.add_parser("distill", help="self-distilled SFT data: the full-attention model answers, answers scored")
    d.add_argument("--model", default="default", help=_MODEL)
    d.add_argument("--dataset", type=dataset_spec, required=True,
                   help="parquet/jsonl path, or synthetic:<length>[:<n per task>[:<seed>]]")
    d.add_argument("--out", type=out_dir, required=True, help="output folder: distill.jsonl (resumable), sft_data.jsonl")
    d.add_argument("--n", type=whole(1), default=4, help="sampled answers per prompt")
    d.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                   help="hf (transformers) or vllm (one engine on the model's folder, full attention)")
    d.add_argument("--temperature", type=number(0), default=0.7, help="0 = greedy (with --n 1)")
    d.add_argument("--top-p", type=FRACTION_OPEN, default=0.95)
    d.add_argument("--max-new-tokens", type=whole(1), default=48)
    d.add_argument("--max-prompt-tokens", type=whole(1), default=None, help="skip (and count) longer prompts")
    d.add_argument("--truncate-prompts", action="store_true", help=_TRUNCATE)
    d.add_argument("--batch-size", type=whole(1), default=4, help="prompts sampled together")
    d.add_argument("--seed", type=whole(0), default=0)
    d.add_argument("--threshold", type=number(0, 1), default=1.0, help="keep answers scoring at least this")
    d.add_argument("--per-prompt", type=whole(0), default=1, help="answers kept per prompt (0 = all that pass)")
    d.add_argument("--device", type=device, default="cpu")
    d.add_argument("--judge-url", default=None, help=_JUDGE_URL)
    d.add_argument("--judge-model", default=None, help="the judge's model name (or SWAA_JUDGE_MODEL)")


def _sft(sub) -> None:
    t = sub.add_parser("sft", help="LoRA SFT under a SWAA config (resumable), merged model saved with its config")
    t.add_argument("--model", default="default", help=_MODEL)
    t.add_argument("--data", type=existing_file, required=True, help=".jsonl/.parquet with prompt and response columns")
    t.add_argument("--swaa", required=True, help="SWAAConfig as JSON, or a settings/config JSON file (first entry)")
    t.add_argument("--setting", default=None, help="with a settings-list file: the entry's index or mark")
    t.add_argument("--out", type=out_dir, required=True, help="output folder: loss.jsonl, checkpoints/, adapter/, merged/")
    t.add_argument("--r", type=whole(1), default=16)
    t.add_argument("--alpha", type=whole(1), default=32)
    t.add_argument("--target-modules", default="q_proj,k_proj,v_proj")
    t.add_argument("--no-rslora", action="store_true")
    t.add_argument("--dropout", type=number(0, 1, hi_open=True), default=0.05)
    t.add_argument("--lr", type=number(0, lo_open=True), default=1e-4)
    t.add_argument("--warmup-ratio", type=number(0, 1, hi_open=True), default=0.05)
    t.add_argument("--max-grad-norm", type=number(0), default=1.0,
                   help="clip the gradient to this norm (0: no clipping)")
    t.add_argument("--batch-size", type=whole(1), default=4, help="per process")
    t.add_argument("--gradient-accumulation-steps", type=whole(1), default=1,
                   help="batches per process in one optimizer step (a step takes processes x this many)")
    t.add_argument("--epochs", type=whole(1), default=1)
    t.add_argument("--max-steps", type=whole(1), default=None)
    t.add_argument("--max-length", type=whole(1), default=None, help="longer examples are dropped (and counted); "
                   "default 2048, or the model's maximum positions if fewer")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--save-every", type=whole(1), default=50)
    t.add_argument("--seed", type=whole(0), default=0)
    t.add_argument("--response-column", default="response", help="'answer' trains on the reference answers")
    t.add_argument("--no-resume", action="store_true", help="start over, removing old checkpoints")
    t.add_argument("--no-merge", action="store_true")
    t.add_argument("--device", type=device, default=None, help="default: the accelerator's device")


def _speed(sub) -> None:
    sp = sub.add_parser("speed", help="time prefill and decode under the speed grid (default model on CPU)")
    sp.add_argument("--model", default="default", help="'default', a folder / hub id, or a shape name "
                    "(qwen3-4b, llama-3.1-8b, qwen3-30b-a3b: random weights)")
    sp.add_argument("--device", type=device, default="cpu")
    sp.add_argument("--lengths", type=whole_list(2), default=[1024, 2048], help="comma list of prompt lengths")
    sp.add_argument("--windows", type=whole_list(1), default=[64, 128],
                    help="comma list of windows (the first gets the recipes)")
    sp.add_argument("--sinks", type=whole(0), default=4)
    sp.add_argument("--reduced", action="store_true", help="full, W + sinks + FA decode, + half the layers full")
    sp.add_argument("--reps", type=whole(1), default=2)
    sp.add_argument("--decode-steps", type=whole(1), default=8)
    sp.add_argument("--predict", action="store_true", help="measure the cost model's rates first; rows get pred_*")
    sp.add_argument("--compile-blocks", action="store_true", help="torch.compile the norms, MLPs and rotary table "
                    "(attention stays eager): what a lean model adds around the kernels (results file *_compiled)")
    sp.add_argument("--out", type=out_dir, default="out/speed")


def _advise(sub) -> None:
    from ..speed.tradeoff import LOWER_IS_BETTER
    ad = sub.add_parser("advise", help="the best settings for a speed or accuracy target")
    ad.add_argument("--speed", type=existing_file, default=None,
                    help="speed results: benchmarks/e2e.py JSON or swaa speed JSONL")
    ad.add_argument("--eval", type=existing_file, default=None,
                    help="eval results: CSV with 'mark' or run_eval results.jsonl")
    ad.add_argument("--model", default=None, help="which model's rows of --speed")
    ad.add_argument("--length", type=whole(1), default=None, help="which context length (tokens)")
    ad.add_argument("--shape", default=None, help="cost model alone: qwen3-4b, llama-3.1-8b, qwen3-30b-a3b")
    ad.add_argument("--settings", type=existing_file, default=None,
                    help="settings-list JSON for --shape (default: the speed grid)")
    ad.add_argument("--rates", type=existing_file, default=None, help="rates for --shape: benchmarks/e2e.py or "
                    "attention.py JSON (default: the committed H200 results)")
    ad.add_argument("--metric", default=None, choices=sorted(LOWER_IS_BETTER),
                    help="default: answer_nll_mean with --eval, else attention_kept")
    ad.add_argument("--time", default="prefill", choices=["prefill", "decode", "total"])
    ad.add_argument("--gen-tokens", type=whole(1), default=256, help="decode steps counted by --time total")
    ad.add_argument("--min-speedup", type=number(0, lo_open=True), default=None,
                    help="e.g. 1.5: at least 1.5x faster than full")
    ad.add_argument("--max-nll-increase", "--max-loss", dest="max_loss", type=number(0), default=None,
                    help="e.g. 0.1: lose at most this much of the metric against full attention")
    ad.add_argument("--top", type=whole(1), default=3)


def build_parser() -> Parser:
    ap = Parser(prog="swaa", description="Sliding Window Attention Adaptation workbench")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in (_reproduce, _eval, _lazy, _distill, _sft):
        add(sub)
    sub.add_parser("info", help="versions, device and attention backends")
    sv = sub.add_parser("serve", help="vLLM OpenAI-compatible server with a SWAA config (other options go to vLLM)")
    from .serve import add_arguments
    add_arguments(sv)
    _speed(sub)
    _advise(sub)
    from .lm_eval import add_task_arguments
    sub.add_parser("lm-eval", add_help=False, help="lm-evaluation-harness with the swaa model registered (every "
                   "other argument goes to lm-eval: swaa lm-eval run --model swaa --model_args ...)")
    add_task_arguments(sub.add_parser("lm-eval-task", help="an lm-eval task (YAML + JSONL) over a dataset, "
                                      "scored as swaa eval scores"))
    return ap
