"""`swaa lm-eval`: lm-evaluation-harness's own command line with the ``swaa`` model registered, and `swaa
lm-eval-task`: an lm-eval task over a dataset, scored as `swaa eval` scores.

lm-eval finds no third-party model without an import, so ``swaa lm-eval ARGS`` imports
:mod:`swaa.evaluation.lm_eval_model` (which registers ``swaa``) and hands ARGS to lm-eval unchanged:

    swaa lm-eval-task --dataset synthetic:512:2 --out out/lm_eval_tasks
    swaa lm-eval run --model swaa --model_args sliding_window_size=64,keep_first=4,force_fa_decode=True \\
        --include_path out/lm_eval_tasks --tasks swaa_synthetic --apply_chat_template --batch_size 1 --device cpu

A mistake in lm-eval's options, or in the swaa model's arguments, is one line and exit code 2, as everywhere else.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .args import Parser, UsageError, dataset_spec, out_dir, whole

__all__ = ["add_task_arguments", "run_lm_eval", "write_lm_eval_task", "LM_EVAL_PIN"]

LM_EVAL_PIN = "lm-eval==0.4.13"          # the version scripts/setup.sh installs
PROG = "swaa lm-eval"


def _task_name(text: str) -> str:
    import argparse
    if not text.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"{text!r}: a task name has letters, digits and underscores only")
    return text


def add_task_arguments(t: Parser) -> None:
    t.add_argument("--dataset", type=dataset_spec, required=True,
                   help="parquet/jsonl path, a LongBench v2 or LongMemEval JSON file, or synthetic:<length>[:<n>]")
    t.add_argument("--out", type=out_dir, required=True, help="folder for NAME.yaml and NAME.jsonl (--include_path)")
    t.add_argument("--name", type=_task_name, default=None,
                   help="task name (default: swaa_<dataset file name>, or swaa_synthetic)")
    t.add_argument("--model", default="default", help="the tokenizer that sizes synthetic prompts ('default' = "
                   "SmolLM2); the model lm-eval runs is given there")
    t.add_argument("--max-new-tokens", type=whole(1), default=32, help="as swaa eval's --max-new-tokens")
    t.add_argument("--sample-first", type=whole(1), default=None, help="use the first N rows")


def write_lm_eval_task(a) -> int:
    """`swaa lm-eval-task`: the dataset's rows as an lm-eval task (no lm-eval needed to write it)."""
    from ..evaluation.lm_eval_task import write_task
    from . import checks
    rows = checks.data_and_models(a, [a.model]).iloc[:a.sample_first]
    stem = "synthetic" if a.dataset.startswith("synthetic:") else Path(a.dataset).stem
    name = a.name or "swaa_" + "".join(c if c.isalnum() else "_" for c in stem)
    path = write_task(rows, a.out, name=name, max_new_tokens=a.max_new_tokens)
    print(f"{len(rows)} rows: {path} (lm-eval: --include_path {a.out} --tasks {name} --apply_chat_template)")
    return 0


def _one_line(parser):
    def error(message):
        raise UsageError(f"{message} (see {PROG} {parser.prog.split()[-1]} --help)", PROG)
    return error


def run_lm_eval(argv: list[str]) -> int:
    """lm-eval's command line on ``argv`` with the swaa model registered; its parser's errors are one line."""
    try:
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging

        from ..evaluation.lm_eval_model import check_model_args      # importing it registers the "swaa" model
    except ImportError as e:
        raise UsageError(f"lm-eval is not installed here ({e}); run `make setup`, or pip install {LM_EVAL_PIN}",
                         PROG) from None
    cli = HarnessCLI()
    for parser in (cli._parser, *cli._subparsers.choices.values()):
        parser.error = _one_line(parser)
    argv_before = sys.argv
    sys.argv = ["lm-eval", *argv]                 # lm-eval reads its arguments from sys.argv
    try:
        args = cli.parse_args()
        if getattr(args, "model", None) == "swaa":   # the swaa model's arguments, checked before lm-eval starts
            for option, given in (("--batch_size", {"batch_size": getattr(args, "batch_size", 1)}),
                                  ("--model_args", args.model_args or {})):
                try:
                    check_model_args(given)
                except (ValueError, OSError) as e:
                    raise UsageError(f"{option}: {e}", PROG) from None
        setup_logging()
        cli.execute(args)
    finally:
        sys.argv = argv_before
    return 0
