"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), eval (settings grids on a
dataset, resumable; HF or vLLM engine), serve (vLLM's OpenAI server with a SWAA config), distill (self-distilled
SFT data), sft (LoRA SFT under a SWAA config), lazy (LightTransfer layer selection), info (environment, backends),
speed (prefill/decode timing grid), advise (best settings for a speed or accuracy target), lm-eval
(lm-evaluation-harness with the swaa model registered), lm-eval-task (an lm-eval task over a dataset).

Each subcommand checks its options, and the files and models they name, before it writes anything; the writers
(eval, lazy, distill, sft, speed) then hold their output folder for the run (:mod:`swaa.store.lock`). A user mistake is
one line on stderr, ``swaa CMD: error: ...``, and exit code 2 (:mod:`swaa.cli.args`, :mod:`swaa.cli.checks`); a bug
stays a traceback.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from . import checks as checks
from .args import UsageError, one_line
from .checks import about, model_config
from .parser import build_parser
from ..evaluation.judge import JudgeError

# library errors name Python arguments; under the command they are these options
_OPTION_NAMES = {"overwrite=True": "--overwrite", "resume=False": "--no-resume",
                 "truncate_prompts=True": "--truncate-prompts", "max_prompt_tokens": "--max-prompt-tokens",
                 "w_sink": "--w-sink", "w_recent": "--w-recent", "w_last": "--w-last",
                 "target_modules": "--target-modules", "gradient_accumulation_steps": "--gradient-accumulation-steps"}


@contextmanager
def _hold(out):
    """One writer per output folder for the run; in a multi-process launch the main process (RANK 0) holds it."""
    from ..store.lock import FolderLock
    lock = FolderLock(out)
    if os.environ.get("RANK", "0") == "0":
        try:
            lock.acquire()
        except OSError as e:
            raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        yield
    finally:
        lock.release()


def _model_arg(name: str):
    return None if name == "default" else name


def _load(a, device=None, dtype=None):
    """The --model's weights and tokenizer (checked by model_config before: what fails here is its weights)."""
    from ..integrations.transformers import load_model
    try:
        return load_model(_model_arg(a.model), device=device or a.device, dtype=dtype)
    except OSError as e:
        raise UsageError(f"--model {a.model}: {one_line(e)}") from None


def _cmd_reproduce(a) -> int:
    import time

    from ..ui.notebooks import NotebookFailed, find_notebooks, run_notebooks
    params = {}
    if a.model:
        model_config(a.model)
        params["MODEL"] = a.model
    with about("--notebooks", a.notebook_dir):
        notebook_dir = find_notebooks(a.notebook_dir)
    if a.device:
        params["DEVICE"] = a.device
    t0 = time.time()
    try:
        timings = run_notebooks(a.notebooks or None, smoke=a.smoke, out=a.out, figures=a.figures, parameters=params,
                                notebook_dir=notebook_dir)
    except NotebookFailed as e:
        print(f"swaa reproduce: {e}", file=sys.stderr)
        return 1
    print(f"swaa reproduce: {len(timings)} notebooks in {time.time() - t0:.0f} s; figures in {a.figures}/")
    return 0


def _cmd_info(a) -> int:
    from ..ui.envinfo import environment_report
    for key, value in environment_report().items():
        print(f"{key:18s} {value}")
    return 0


def _cmd_eval(a) -> int:
    from ..config import load_settings
    from ..evaluation.run import EvalOptions, run_eval
    with about("--settings", a.settings):
        settings = [c for c, _ in load_settings(a.settings)]
    models = a.model or ["default"]
    dataset = checks.data_and_models(a, models)
    judge = checks.make_judge(a)
    opts = EvalOptions(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, max_prompt_tokens=a.max_prompt_tokens,
                       sample_first=a.sample_first, cot=a.cot, device=a.device, truncate_prompts=a.truncate_prompts)
    with _hold(a.out):
        summaries = run_eval([_model_arg(m) for m in models], settings, dataset, a.out, engine=a.engine, options=opts,
                             overwrite=a.overwrite, judge=judge)
    for s in summaries:
        print(json.dumps({k: v for k, v in s.items() if k != "key"}))
    return 0


def _cmd_serve(a, extra) -> int:
    from .serve import main as serve_main
    if a.model == "default":
        from ..models import default_model_path
        a.model = str(default_model_path())
    return serve_main(a, extra)


def _cmd_speed(a) -> int:
    from ..speed.costmodel import SHAPES
    from ..evaluation.prompts import max_positions
    from ..speed.measure import build_random_model, measure_rates, run_speed_grid, speed_settings
    config = SHAPES[a.model].hf_config() if a.model in SHAPES else model_config(a.model)
    limit = max_positions(config)
    if limit is not None and max(a.lengths) > limit:
        raise UsageError(f"--lengths {','.join(map(str, a.lengths))}: {max(a.lengths)} tokens exceed the model's "
                         f"{limit} positions (max_position_embeddings); give lengths up to {limit}")
    with _hold(a.out):
        if a.model in SHAPES:                               # a named shape: random weights, built on the device
            model, name = build_random_model(SHAPES[a.model], a.device), a.model
        else:
            model, _ = _load(a)
            name = "default" if a.model == "default" else Path(a.model).name
        if a.compile_blocks:
            from ..integrations.transformers import compile_blocks
            compile_blocks(model)
            name += "_compiled"
        settings = speed_settings(model.config.num_hidden_layers, a.windows, a.sinks, reduced=a.reduced)
        rates = None
        if a.predict:
            from ..speed.costmodel import ModelShape
            shape = ModelShape.from_config(model.config, name=name)
            pats = [(None, 0)] + sorted({(c.sliding_window_size, c.keep_first) for c in settings if not c.is_full})
            rates = measure_rates(model, shape, a.device, a.lengths, pats, linear_n=min(a.lengths),
                                  decode_n=min(a.lengths), evict_window=max(2, min(a.windows) // 2))
        out = Path(a.out) / f"speed_{name}_{a.device}.jsonl"
        rows = run_speed_grid(model, settings, a.lengths, out, model_name=name, reps=a.reps,
                              decode_steps=a.decode_steps, rates=rates)
    full = {r["n"]: r for r in rows if r["mark"] == "full"}
    print(f"{'n':>7} {'setting':48s} {'prefill s':>9} {'x full':>6} {'decode ms':>9} {'x full':>6} {'KV MiB':>8}")
    for r in rows:
        f = full.get(r["n"], r)
        print(f"{r['n']:>7} {r['mark']:48s} {r['prefill_s']:9.3f} {f['prefill_s'] / r['prefill_s']:6.2f} "
              f"{r['decode_step_ms']:9.2f} {f['decode_step_ms'] / r['decode_step_ms']:6.2f} "
              f"{r['kv_bytes_decode'] / 2**20:8.2f}")
    print(f"rows in {out} (a rerun skips them)")
    return 0


def _advise_speed(a):
    """Speed rows: measured (--speed) or predicted by the cost model (--shape, --length)."""
    from ..speed.tradeoff import load_speed, predicted_rows
    if a.speed is None and a.shape is None:
        raise UsageError("give --speed FILE (benchmarks/e2e.py or swaa speed results) or --shape NAME --length N "
                         "(the cost model alone)")
    if a.speed is not None:
        with about("--speed", a.speed):
            return load_speed(a.speed, a.model, a.length)
    from ..config import load_settings
    from ..speed.costmodel import get_shape, load_rates, packaged_rates_path
    from ..speed.measure import speed_settings
    if a.length is None:
        raise UsageError(f"--shape {a.shape} needs --length (tokens), e.g. --length 131072")
    with about("--shape", a.shape):
        shape = get_shape(a.shape)
    with about("--settings", a.settings):
        settings = [c for c, _ in load_settings(a.settings)] if a.settings else speed_settings(shape.layers)
    with about("--rates", a.rates):
        rates = load_rates(a.rates or packaged_rates_path(), shape)
    with about("--settings", a.settings):
        return predicted_rows(shape, settings, a.length, rates)


def _cmd_advise(a) -> int:
    from ..speed.tradeoff import advise, load_eval, tradeoff_table
    speed = _advise_speed(a)
    metric = a.metric or ("answer_nll_mean" if a.eval else "attention_kept")
    if a.eval is None and metric != "attention_kept":
        raise UsageError(f"--metric {metric} needs --eval FILE with that column")
    with about("--eval", a.eval):
        evals = load_eval(a.eval) if a.eval else None
    points = tradeoff_table(evals, speed, metric=metric, time=a.time, gen_tokens=a.gen_tokens)
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
    from ..config import SWAAConfig
    from ..analysis.lighttransfer import chat_ids, interleaved_layers, lazy_config, lazy_layer_freqs, usable_samples
    dataset = checks.data_and_models(a, [a.model], seed=a.seed)
    tok, rows = checks.tokenizer(a.model), dataset.iloc[:a.n]       # samples too short for the window: before the weights
    usable_samples([chat_ids(tok, p, ans) for p, ans in zip(rows["prompt"], rows["answer"])], w_sink=a.w_sink,
                   w_recent=a.w_recent, w_last=a.w_last)
    base = SWAAConfig(sliding_window_size=a.window or a.w_recent, keep_first=a.w_sink if a.keep_first is None
                      else a.keep_first, force_fa_decode=a.fa_decode)
    out = Path(a.out)
    name = "default" if a.model == "default" else a.model.rstrip("/").split("/")[-1]
    with _hold(a.out):
        model, tok = _load(a)
        res = lazy_layer_freqs(model, tok, dataset, w_sink=a.w_sink, w_recent=a.w_recent, w_last=a.w_last,
                               top_p=a.top_p, n=a.n, rows_path=out / f"{name}_lazy_rows.jsonl",
                               out=out / f"{name}_lazy_layers_freq.json", model_name=name)
        cfg = lazy_config(res, a.ratio, base)
        n = res["num_layers"]
        inter = SWAAConfig(**{**base.to_dict(),
                              "non_sliding_layers": interleaved_layers(n, len(cfg.non_sliding_layers))})
        (out / f"{name}_lazy_config.json").write_text(json.dumps(
            [{"swaa_config": c.to_dict(), "model_list": [a.model]} for c in (cfg, inter)], indent=1) + "\n")
    print(f"{res['n_used']} samples used, {res['n_skipped']} skipped (shorter than {res['min_length']} tokens)")
    print("lazy frequency per layer: " + " ".join(f"{k}:{v:.2f}" for k, v in res["freq"].items()))
    print(f"lazy config ({a.ratio:.0%} of {n} layers sliding): {cfg.mark} non_sliding_layers={cfg.non_sliding_layers}")
    print(f"written: {out}/{name}_lazy_layers_freq.json, {name}_lazy_config.json (lazy + interleaved, for swaa eval)")
    return 0


def _cmd_sft(a) -> int:
    from ..evaluation.prompts import max_positions
    from ..training.sft import SFTConfig, merge_and_save, train_sft
    from ..training.sft_checkpoint import check_resume, latest_checkpoint
    from ..training.sft_parallel import check_launch, launch_accelerator
    swaa = checks.swaa_arg(a.swaa, a.setting)
    rows = checks.sft_rows(a)
    modules = tuple(m.strip() for m in a.target_modules.split(",") if m.strip())
    if not modules:
        raise UsageError(f"--target-modules {a.target_modules!r}: name the linear layers to adapt, e.g. q_proj,v_proj")
    config = model_config(a.model)
    limit = max_positions(config)
    if a.max_length is not None and limit is not None and a.max_length > limit:
        raise UsageError(f"--max-length {a.max_length} exceeds the model's {limit} positions; give at most {limit}")
    checks.check_modules(config, modules)
    cfg = SFTConfig(r=a.r, alpha=a.alpha, target_modules=modules, rslora=not a.no_rslora, dropout=a.dropout, lr=a.lr,
                    warmup_ratio=a.warmup_ratio, max_grad_norm=a.max_grad_norm or None, batch_size=a.batch_size,
                    gradient_accumulation_steps=a.gradient_accumulation_steps, epochs=a.epochs, max_steps=a.max_steps,
                    max_length=a.max_length or min(2048, limit or 2048),
                    gradient_checkpointing=a.gradient_checkpointing, save_every=a.save_every, seed=a.seed,
                    response_column=a.response_column)
    check_launch()
    with _hold(a.out):
        import torch
        # on CPU, accelerate joins a torchrun launch only when told it is a CPU run (else each process trains alone)
        accelerator = launch_accelerator(cpu=a.device == "cpu" or not torch.cuda.is_available())
        if not a.no_resume:                                     # before the weights load: it needs no model
            check_resume(latest_checkpoint(a.out), accelerator.num_processes, cfg.gradient_accumulation_steps)
        if accelerator.is_fsdp2:      # weights stay on the CPU until fully_shard moves each process's shard to its GPU
            model, tok = _load(a, device="cpu", dtype=torch.bfloat16 if accelerator.device.type == "cuda" else None)
        else:
            model, tok = _load(a, device=a.device or accelerator.device)
        run = train_sft(model, tok, rows, a.out, swaa=swaa, config=cfg, resume=not a.no_resume,
                        accelerator=accelerator)
        merged = None if a.no_merge or not accelerator.is_main_process else merge_and_save(run.model, tok,
                                                                                            Path(a.out) / "merged")
    if accelerator.is_main_process:
        print(json.dumps(dict(steps=run.steps, resumed_from=run.resumed_from, merged=str(merged) if merged else None,
                              **{k: v for k, v in run.report.items() if k != "fingerprint"})))
    return 0


def _cmd_distill(a) -> int:
    from ..training.distill import select_distilled, self_distill
    if a.temperature == 0 and a.n != 1:
        raise UsageError(f"--temperature 0 (greedy) gives one answer per prompt: use it with --n 1, or a temperature "
                         f"> 0 for --n {a.n}")
    if a.engine == "vllm" and a.model != "default" and not Path(a.model).is_dir():
        raise UsageError(f"--engine vllm loads the teacher from its folder, and --model {a.model} is not a local "
                         "folder; download it first, or use --engine hf")
    dataset = checks.data_and_models(a, [a.model])
    judge = checks.make_judge(a)
    checks.check_prompts(a, dataset)
    with _hold(a.out):
        model, tok = _load(a)
        rows = self_distill(model, tok, dataset, a.out, n=a.n, engine=a.engine, temperature=a.temperature,
                            top_p=a.top_p, max_new_tokens=a.max_new_tokens, seed=a.seed, judge=judge,
                            max_prompt_tokens=a.max_prompt_tokens, truncate_prompts=a.truncate_prompts,
                            batch_size=a.batch_size)
        data = select_distilled(rows, threshold=a.threshold, per_prompt=a.per_prompt or None)
        target = Path(a.out) / "sft_data.jsonl"
        data.to_json(target.with_suffix(".tmp"), orient="records", lines=True)
        target.with_suffix(".tmp").replace(target)
    print(json.dumps(dict(data.attrs, data=str(target))))
    return 0


def _cmd_lm_eval_task(a) -> int:
    from .lm_eval import write_lm_eval_task
    return write_lm_eval_task(a)


COMMANDS = {"reproduce": _cmd_reproduce, "eval": _cmd_eval, "lazy": _cmd_lazy, "distill": _cmd_distill,
            "sft": _cmd_sft, "info": _cmd_info, "speed": _cmd_speed, "advise": _cmd_advise,
            "lm-eval-task": _cmd_lm_eval_task}      # and serve, lm-eval


def main(argv=None) -> int:
    prog = "swaa"
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["lm-eval"]:               # every other argument is lm-eval's own
            prog = "swaa lm-eval"
            from .lm_eval import run_lm_eval
            return run_lm_eval(argv[1:])
        a, extra = build_parser().parse_known_args(argv)
        prog = f"swaa {a.cmd}"
        if a.cmd == "serve":
            return _cmd_serve(a, extra)
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
        return COMMANDS[a.cmd](a)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except JudgeError as e:                     # the judge went away during the run
        print(f"{prog}: error: {one_line(e)}; the rows generated so far are kept: run the same command again to "
              "resume", file=sys.stderr)
        return 1
    except ValueError as e:                     # a user mistake: the message names the value and the fix
        msg = one_line(e)
        if not isinstance(e, UsageError):
            for name, option in _OPTION_NAMES.items():
                msg = msg.replace(name, option)
        print(f"{getattr(e, 'prog', None) or prog}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
