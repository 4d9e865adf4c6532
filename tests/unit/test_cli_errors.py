"""Every user mistake in the `swaa` command: exit code 2, one line on stderr naming the option and the value, no
traceback, and nothing written. The table runs in-process through swaa.cli.main (seconds for all of it); a few cases
run through `python -m swaa.cli` as a user types them. Each case fails before a model's weights are needed: a model
here is a folder holding a config.json and a tokenizer, no weights: what the command reads before it loads them.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from swaa import SWAAConfig
from swaa.cli import main

ROOT = Path(__file__).resolve().parents[2]
SWAA = '{"sliding_window_size": 64, "keep_first": 4}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files, good and broken, and a model folder without weights (4 layers, 512 positions, a word tokenizer)."""
    import pandas as pd
    from transformers import LlamaConfig
    d = tmp_path_factory.mktemp("files")
    w = lambda name, text: (d / name).write_text(text)                                 # noqa: E731
    row = '{"prompt": "a long text", "question": "q?", "answer": "x"}\n'
    w("good.jsonl", row * 2)
    w("prompt_int.jsonl", row + '{"prompt": 5, "question": "q?", "answer": "x"}\n')
    w("answer_null.jsonl", '{"id": "r0", "prompt": "text", "question": "q?", "answer": null}\n')
    w("broken.jsonl", row + '{"prompt": "a"\n')
    w("nocols.jsonl", '{"text": "a"}\n')
    w("data.txt", "prompt,answer\n")
    w("broken.parquet", "not parquet")
    w("ok.json", '[{"swaa_config": {"sliding_window_size": 64}, "model_list": ["default"]}]')
    w("two.json", '[{"swaa_config": {}}, {"swaa_config": {"sliding_window_size": 64}}]')
    w("empty.json", "[]")
    w("null.json", '[{"swaa_config": null}]')
    w("unknown_key.json", '[{"swaa_config": {}, "models": ["default"]}]')
    w("broken.json", '[{"swaa_config": {},\n  "model_list": [}]')
    w("not_list.json", '{"sliding_window_size": 64}')
    w("no_config.json", '[{"model_list": ["default"]}]')
    w("bad_window.json", '[{"swaa_config": {"sliding_window_size": -1}}]')
    w("bad_field.json", '[{"swaa_config": {"window": 64}}]')
    w("model_list_int.json", '[{"swaa_config": {}, "model_list": 5}]')
    w("sft.jsonl", '{"prompt": "p", "response": "r"}\n' * 2)
    w("sft_null.jsonl", '{"prompt": "p", "response": "r"}\n{"prompt": "p", "response": null}\n')
    w("afile", "a file, not a folder")
    w("long.jsonl", '{"id": "long-0", "prompt": "%s", "question": "q?", "answer": "x"}\n' % ("a " * 600))
    w("results.csv", "setting,contains\nfull,1\n")
    pd.DataFrame({"prompt": [], "question": [], "answer": []}).to_parquet(d / "zero_rows.parquet")
    fixtures = ROOT / "tests" / "fixtures"                      # the benchmarks' released schemas, each broken once
    lb, lm = (json.loads((fixtures / f).read_text()) for f in ("longbench_v2.json", "longmemeval_s.json"))
    w("longbench_answer_e.json", json.dumps([dict(lb[0], answer="E")]))
    w("longbench_no_context.json", json.dumps([{k: v for k, v in lb[0].items() if k != "context"}]))
    w("longmemeval_dates.json", json.dumps([dict(lm[0], haystack_dates=[])]))
    LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512).save_pretrained(d / "model")
    _word_tokenizer().save_pretrained(d / "model")
    return d


def _word_tokenizer():
    """A whitespace word-level tokenizer with a chat template: what the command reads of a model before its weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = "<unk> a long text q ? p r x user assistant".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<unk>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    return tok


EVAL = ["eval", "--dataset", "{d}/good.jsonl", "--settings", "{d}/ok.json", "--out", "{o}"]
LAZY = ["lazy", "--dataset", "{d}/good.jsonl", "--out", "{o}", "--w-sink", "0", "--w-recent", "1", "--w-last", "1"]
DISTILL = ["distill", "--dataset", "{d}/good.jsonl", "--out", "{o}"]
SFT = ["sft", "--data", "{d}/sft.jsonl", "--swaa", SWAA, "--out", "{o}"]
SPEED = ["speed", "--model", "tiny-qwen3", "--out", "{o}"]
SHAPE = ["advise", "--shape", "qwen3-4b", "--length", "1000"]
LMT = ["lm-eval-task", "--dataset", "{d}/good.jsonl", "--out", "{o}"]
LME = ["lm-eval", "run", "--model", "swaa", "--tasks", "swaa_good", "--include_path", "{o}"]
UNREACHABLE = ["--model", "{m}", "--judge-url", "http://127.0.0.1:{port}/v1", "--judge-model", "judge"]


def _with(base, *args):
    """``base`` with options replaced or added."""
    out = list(base)
    for flag, value in zip(args[::2], args[1::2]):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _without(base, flag):
    i = base.index(flag)
    return base[:i] + base[i + 2:]


# (argv, what the one line must name)
CASES = {
    # eval: numbers, device, engine
    "eval max-new-tokens -1": (_with(EVAL, "--max-new-tokens", "-1"), ["--max-new-tokens", "-1"]),
    "eval max-new-tokens 0": (_with(EVAL, "--max-new-tokens", "0"), ["--max-new-tokens", "0"]),
    "eval max-new-tokens abc": (_with(EVAL, "--max-new-tokens", "abc"), ["--max-new-tokens", "abc"]),
    "eval batch-size -1": (_with(EVAL, "--batch-size", "-1"), ["--batch-size", "-1"]),
    "eval batch-size 0": (_with(EVAL, "--batch-size", "0"), ["--batch-size", "0"]),
    "eval batch-size 1.5": (_with(EVAL, "--batch-size", "1.5"), ["--batch-size", "1.5"]),
    "eval max-prompt-tokens 0": (_with(EVAL, "--max-prompt-tokens", "0"), ["--max-prompt-tokens", "0"]),
    "eval sample-first -1": (_with(EVAL, "--sample-first", "-1"), ["--sample-first", "-1"]),
    "eval sample-first 0": (_with(EVAL, "--sample-first", "0"), ["--sample-first", "0"]),
    "eval device bogus": (_with(EVAL, "--device", "bogus"), ["--device", "bogus"]),
    "eval device cuda:99": (_with(EVAL, "--device", "cuda:99"), ["--device", "cuda:99"]),
    "eval engine tpu": (_with(EVAL, "--engine", "tpu"), ["--engine", "tpu"]),
    # eval: the dataset
    "eval dataset missing": (_with(EVAL, "--dataset", "{d}/missing.parquet"), ["--dataset", "missing.parquet"]),
    "eval dataset folder": (_with(EVAL, "--dataset", "{d}"), ["--dataset", "is a folder"]),
    "eval dataset hub id offline": (_with(EVAL, "--dataset", "nowhere-dataset"), ["--dataset", "nowhere-dataset"]),
    "eval dataset synthetic:abc": (_with(EVAL, "--dataset", "synthetic:abc"), ["--dataset", "synthetic:abc"]),
    "eval dataset synthetic:10": (_with(EVAL, "--dataset", "synthetic:10"), ["--dataset", "synthetic:10", ">= 64"]),
    "eval dataset synthetic n 0": (_with(EVAL, "--dataset", "synthetic:512:0"), ["--dataset", "synthetic:512:0"]),
    "eval dataset synthetic seed x": (_with(EVAL, "--dataset", "synthetic:128:1:x"), ["--dataset", "128:1:x"]),
    "eval prompt not text": (_with(EVAL, "--dataset", "{d}/prompt_int.jsonl"), ["--dataset", "row 1", "prompt '5'"]),
    "eval answer null": (_with(EVAL, "--dataset", "{d}/answer_null.jsonl"), ["--dataset", "'r0'", "no answer"]),
    "eval dataset broken json": (_with(EVAL, "--dataset", "{d}/broken.jsonl"), ["--dataset", "broken.jsonl", "line 2"]),
    "eval dataset columns": (_with(EVAL, "--dataset", "{d}/nocols.jsonl"), ["--dataset", "lacks columns", "'text'"]),
    "eval dataset zero rows": (_with(EVAL, "--dataset", "{d}/zero_rows.parquet"), ["--dataset", "is empty"]),
    "eval dataset txt": (_with(EVAL, "--dataset", "{d}/data.txt"), ["--dataset", "data.txt", ".parquet"]),
    "eval dataset not parquet": (_with(EVAL, "--dataset", "{d}/broken.parquet"), ["--dataset", "broken.parquet"]),
    "eval longbench answer E": (_with(EVAL, "--dataset", "{d}/longbench_answer_e.json"), ["--dataset", "item 0",
                                                                                         "answer 'E'", "A, B, C, D"]),
    "eval longbench no context": (_with(EVAL, "--dataset", "{d}/longbench_no_context.json"),
                                  ["--dataset", "item 0 lacks ['context']", "LongBench v2"]),
    "eval longmemeval dates": (_with(EVAL, "--dataset", "{d}/longmemeval_dates.json"),
                               ["--dataset", "'e47becba'", "2 haystack_sessions and 0 haystack_dates"]),
    # eval: the settings list
    "eval settings missing": (_with(EVAL, "--settings", "{d}/missing.json"), ["--settings", "missing.json"]),
    "eval settings empty": (_with(EVAL, "--settings", "{d}/empty.json"), ["--settings", "empty.json", "empty list"]),
    "eval settings null config": (_with(EVAL, "--settings", "{d}/null.json"), ["--settings", "null", "entry 0"]),
    "eval settings unknown key": (_with(EVAL, "--settings", "{d}/unknown_key.json"), ["--settings", "'models'"]),
    "eval settings broken json": (_with(EVAL, "--settings", "{d}/broken.json"), ["--settings", "broken.json",
                                                                                  "line 2"]),
    "eval settings not a list": (_with(EVAL, "--settings", "{d}/not_list.json"), ["--settings", "JSON list"]),
    "eval settings no swaa_config": (_with(EVAL, "--settings", "{d}/no_config.json"), ["--settings", "'swaa_config'"]),
    "eval settings bad window": (_with(EVAL, "--settings", "{d}/bad_window.json"), ["--settings",
                                                                                   "sliding_window_size=-1"]),
    "eval settings bad field": (_with(EVAL, "--settings", "{d}/bad_field.json"), ["--settings", "'window'"]),
    "eval settings model_list 5": (_with(EVAL, "--settings", "{d}/model_list_int.json"), ["--settings", "model_list"]),
    # eval: output folder, model, judge, the command line itself
    "eval out is a file": (_with(EVAL, "--out", "{d}/afile"), ["--out", "afile", "is a file"]),
    "eval out under a file": (_with(EVAL, "--out", "{d}/afile/sub"), ["--out", "afile/sub"]),
    "eval out not writable": (_with(EVAL, "--out", "/proc/self/swaa-out"), ["--out", "/proc/self", "not writable"]),
    "eval out cannot be made": (_with(EVAL, "--out", "/sys/swaa-out", "--model", "{m}"), ["--out", "/sys/swaa-out"]),
    "eval model missing": (_with(EVAL, "--model", "/nowhere/model"), ["--model", "/nowhere/model"]),
    "eval model without config": (_with(EVAL, "--model", "{d}"), ["--model", "config.json"]),
    "eval judge unreachable": (EVAL + UNREACHABLE, ["--judge-url", "http://127.0.0.1:"]),
    "eval judge without model": (EVAL + ["--judge-url", "http://127.0.0.1:9/v1"], ["--judge-model",
                                                                                   "http://127.0.0.1:9/v1"]),
    "eval judge without url": (EVAL + ["--judge-model", "j"], ["--judge-url", "--judge-model j"]),
    "eval settings option missing": (_without(EVAL, "--settings"), ["--settings"]),
    "eval out option missing": (_without(EVAL, "--out"), ["--out"]),
    "eval unknown option": (EVAL + ["--bogus", "1"], ["--bogus"]),
    "eval prompt beyond the model": (_with(EVAL, "--model", "{m}", "--dataset", "{d}/long.jsonl"),
                                     ["row 'long-0'", "512 positions", "--truncate-prompts"]),
    # lazy: every option before the work
    "lazy n 0": (_with(LAZY, "--n", "0"), ["--n", "0"]),
    "lazy n -3": (_with(LAZY, "--n", "-3"), ["--n", "-3"]),
    "lazy w-sink -1": (_with(LAZY, "--w-sink", "-1"), ["--w-sink", "-1"]),
    "lazy w-recent 0": (_with(LAZY, "--w-recent", "0"), ["--w-recent", "0"]),
    "lazy w-last 0": (_with(LAZY, "--w-last", "0"), ["--w-last", "0"]),
    "lazy top-p 0": (_with(LAZY, "--top-p", "0"), ["--top-p", "0"]),
    "lazy top-p 1.5": (_with(LAZY, "--top-p", "1.5"), ["--top-p", "1.5"]),
    "lazy top-p nan": (_with(LAZY, "--top-p", "nan"), ["--top-p", "nan"]),
    "lazy ratio 2": (_with(LAZY, "--ratio", "2"), ["--ratio", "2"]),
    "lazy ratio -0.1": (_with(LAZY, "--ratio", "-0.1"), ["--ratio", "-0.1"]),
    "lazy window 0": (_with(LAZY, "--window", "0"), ["--window", "0"]),
    "lazy keep-first -1": (_with(LAZY, "--keep-first", "-1"), ["--keep-first", "-1"]),
    "lazy seed -1": (_with(LAZY, "--seed", "-1"), ["--seed", "-1"]),
    "lazy device bogus": (_with(LAZY, "--device", "bogus"), ["--device", "bogus"]),
    "lazy model missing": (_with(LAZY, "--model", "/nowhere/model"), ["--model", "/nowhere/model"]),
    "lazy dataset missing": (_with(LAZY, "--dataset", "{d}/missing.jsonl"), ["--dataset", "missing.jsonl"]),
    "lazy out is a file": (_with(LAZY, "--out", "{d}/afile"), ["--out", "afile"]),
    "lazy samples shorter than the window": (_with(LAZY, "--model", "{m}", "--w-recent", "64"), ["--w-recent", "64"]),
    # distill
    "distill top-p 2": (_with(DISTILL, "--top-p", "2"), ["--top-p", "2"]),
    "distill top-p 0": (_with(DISTILL, "--top-p", "0"), ["--top-p", "0"]),
    "distill temperature -1": (_with(DISTILL, "--temperature", "-1"), ["--temperature", "-1"]),
    "distill greedy with n 4": (_with(DISTILL, "--temperature", "0"), ["--temperature 0", "--n 4"]),
    "distill n 0": (_with(DISTILL, "--n", "0"), ["--n", "0"]),
    "distill max-new-tokens 0": (_with(DISTILL, "--max-new-tokens", "0"), ["--max-new-tokens", "0"]),
    "distill max-prompt-tokens 0": (_with(DISTILL, "--max-prompt-tokens", "0"), ["--max-prompt-tokens", "0"]),
    "distill batch-size -1": (_with(DISTILL, "--batch-size", "-1"), ["--batch-size", "-1"]),
    "distill per-prompt -1": (_with(DISTILL, "--per-prompt", "-1"), ["--per-prompt", "-1"]),
    "distill threshold 2": (_with(DISTILL, "--threshold", "2"), ["--threshold", "2"]),
    "distill seed x": (_with(DISTILL, "--seed", "x"), ["--seed", "'x'"]),
    "distill engine bogus": (_with(DISTILL, "--engine", "bogus"), ["--engine", "bogus"]),
    "distill vllm hub id": (_with(DISTILL, "--engine", "vllm", "--model", "org/model"), ["--engine vllm",
                                                                                       "org/model"]),
    "distill answer null": (_with(DISTILL, "--dataset", "{d}/answer_null.jsonl"), ["--dataset", "no answer"]),
    "distill model missing": (_with(DISTILL, "--model", "/nowhere/model"), ["--model", "/nowhere/model"]),
    "distill judge unreachable": (DISTILL + UNREACHABLE, ["--judge-url", "http://127.0.0.1:"]),
    "distill prompt beyond the model": (_with(DISTILL, "--model", "{m}", "--dataset", "{d}/long.jsonl"),
                                        ["row 'long-0'", "--truncate-prompts"]),
    # sft
    "sft swaa not json": (_with(SFT, "--swaa", "w=64"), ["--swaa", "'w=64'"]),
    "sft swaa bad window": (_with(SFT, "--swaa", '{"sliding_window_size": -3}'), ["--swaa", "sliding_window_size=-3"]),
    "sft swaa broken json": (_with(SFT, "--swaa", '{"sliding_window_size": 64'), ["--swaa", "not valid JSON"]),
    "sft swaa list needs setting": (_with(SFT, "--swaa", "{d}/two.json"), ["--swaa", "--setting"]),
    "sft setting out of range": (_with(SFT, "--swaa", "{d}/two.json", "--setting", "9"), ["--setting", "'9'"]),
    "sft swaa file broken": (_with(SFT, "--swaa", "{d}/broken.json"), ["--swaa", "broken.json", "line 2"]),
    "sft swaa file null entry": (_with(SFT, "--swaa", "{d}/null.json"), ["--swaa", "null"]),
    "sft data missing": (_with(SFT, "--data", "{d}/missing.jsonl"), ["--data", "missing.jsonl"]),
    "sft data without response": (_with(SFT, "--data", "{d}/good.jsonl"), ["--data", "'response'"]),
    "sft data null response": (_with(SFT, "--data", "{d}/sft_null.jsonl"), ["--data", "row 1", "no response"]),
    "sft response-column nope": (_with(SFT, "--response-column", "nope"), ["--data", "'nope'"]),
    "sft r 0": (_with(SFT, "--r", "0"), ["--r", "0"]),
    "sft alpha 0": (_with(SFT, "--alpha", "0"), ["--alpha", "0"]),
    "sft dropout 1": (_with(SFT, "--dropout", "1"), ["--dropout", "1"]),
    "sft dropout -0.1": (_with(SFT, "--dropout", "-0.1"), ["--dropout", "-0.1"]),
    "sft lr 0": (_with(SFT, "--lr", "0"), ["--lr", "0"]),
    "sft lr -1": (_with(SFT, "--lr", "-1"), ["--lr", "-1"]),
    "sft warmup-ratio 1": (_with(SFT, "--warmup-ratio", "1"), ["--warmup-ratio", "1"]),
    "sft batch-size 0": (_with(SFT, "--batch-size", "0"), ["--batch-size", "0"]),
    "sft gradient-accumulation-steps 0": (_with(SFT, "--gradient-accumulation-steps", "0"),
                                          ["--gradient-accumulation-steps", "0"]),
    "sft max-grad-norm -1": (_with(SFT, "--max-grad-norm", "-1"), ["--max-grad-norm", "-1"]),
    "sft epochs 0": (_with(SFT, "--epochs", "0"), ["--epochs", "0"]),
    "sft max-steps 0": (_with(SFT, "--max-steps", "0"), ["--max-steps", "0"]),
    "sft max-length 0": (_with(SFT, "--max-length", "0"), ["--max-length", "0"]),
    "sft save-every 0": (_with(SFT, "--save-every", "0"), ["--save-every", "0"]),
    "sft target-modules empty": (_with(SFT, "--target-modules", ","), ["--target-modules", "','"]),
    "sft max-length beyond model": (_with(SFT, "--max-length", "100000", "--model", "{m}"), ["--max-length", "100000",
                                                                                          "512"]),
    "sft device bogus": (_with(SFT, "--device", "bogus"), ["--device", "bogus"]),
    "sft model missing": (_with(SFT, "--model", "/nowhere/model"), ["--model", "/nowhere/model"]),
    "sft target module not in the model": (_with(SFT, "--model", "{m}", "--target-modules", "q_proj,nope"),
                                           ["--target-modules", "['nope']"]),
    # speed
    "speed lengths abc": (_with(SPEED, "--lengths", "1024,abc"), ["--lengths", "abc"]),
    "speed lengths empty": (_with(SPEED, "--lengths", ""), ["--lengths", "''"]),
    "speed lengths 1": (_with(SPEED, "--lengths", "1"), ["--lengths", "1"]),
    "speed windows 0": (_with(SPEED, "--windows", "0"), ["--windows", "0"]),
    "speed windows gap": (_with(SPEED, "--windows", "64,,128"), ["--windows", "64,,128"]),
    "speed sinks -1": (_with(SPEED, "--sinks", "-1"), ["--sinks", "-1"]),
    "speed reps 0": (_with(SPEED, "--reps", "0"), ["--reps", "0"]),
    "speed decode-steps 0": (_with(SPEED, "--decode-steps", "0"), ["--decode-steps", "0"]),
    "speed device bogus": (_with(SPEED, "--device", "bogus"), ["--device", "bogus"]),
    "speed out is a file": (_with(SPEED, "--out", "{d}/afile"), ["--out", "afile"]),
    "speed model missing": (_with(SPEED, "--model", "/nowhere/model"), ["--model", "/nowhere/model"]),
    "speed lengths beyond model": (_with(SPEED, "--model", "{m}", "--lengths", "1024"), ["--lengths", "1024", "512"]),
    # advise
    "advise length -1": (["advise", "--length", "-1"], ["--length", "-1"]),
    "advise length abc": (["advise", "--length", "abc"], ["--length", "abc"]),
    "advise nothing to rank": (["advise"], ["--speed", "--shape"]),
    "advise shape unknown": (_with(SHAPE, "--shape", "nope"), ["--shape", "nope"]),
    "advise shape without length": (_without(SHAPE, "--length"), ["--shape qwen3-4b", "--length"]),
    "advise speed missing": (["advise", "--speed", "{d}/missing.json"], ["--speed", "missing.json"]),
    "advise speed broken": (["advise", "--speed", "{d}/broken.json"], ["--speed", "broken.json", "line 2"]),
    "advise speed not speed": (["advise", "--speed", "{d}/ok.json"], ["--speed", "ok.json", "speed results"]),
    "advise eval missing": (_with(SHAPE, "--eval", "{d}/missing.csv"), ["--eval", "missing.csv"]),
    "advise eval without mark": (_with(SHAPE, "--eval", "{d}/results.csv"), ["--eval", "results.csv", "'mark'"]),
    "advise metric bleu": (_with(SHAPE, "--metric", "bleu"), ["--metric", "bleu"]),
    "advise metric needs eval": (_with(SHAPE, "--metric", "contains"), ["--metric contains", "--eval"]),
    "advise time forever": (_with(SHAPE, "--time", "forever"), ["--time", "forever"]),
    "advise min-speedup 0": (_with(SHAPE, "--min-speedup", "0"), ["--min-speedup", "0"]),
    "advise max-nll-increase -1": (_with(SHAPE, "--max-nll-increase", "-1"), ["--max-nll-increase", "-1"]),
    "advise top 0": (_with(SHAPE, "--top", "0"), ["--top", "0"]),
    "advise gen-tokens 0": (_with(SHAPE, "--gen-tokens", "0"), ["--gen-tokens", "0"]),
    "advise rates broken": (_with(SHAPE, "--rates", "{d}/broken.json"), ["--rates", "broken.json", "line 2"]),
    "advise settings empty": (_with(SHAPE, "--settings", "{d}/empty.json"), ["--settings", "empty.json"]),
    # serve: checked against the model's config.json before vLLM starts
    "serve fa-decode abc": (["serve", "{m}", "--force-fa-decode", "abc"], ["--force-fa-decode", "abc"]),
    "serve window 0": (["serve", "{m}", "--sliding-window-size", "0"], ["--sliding-window-size", "0"]),
    "serve window x": (["serve", "{m}", "--sliding-window-size", "x"], ["--sliding-window-size", "'x'"]),
    "serve keep-first -1": (["serve", "{m}", "--keep-first", "-1"], ["--keep-first", "-1"]),
    "serve layers 1,x": (["serve", "{m}", "--non-sliding-layers", "1,x"], ["--non-sliding-layers", "1,x"]),
    "serve layer beyond model": (["serve", "{m}", "--sliding-window-size", "64", "--non-sliding-layers", "1,40"],
                                 ["--non-sliding-layers", "[40]", "4 layers"]),
    "serve fa layer beyond model": (["serve", "{m}", "--sliding-window-size", "64", "--force-fa-decode", "2,9"],
                                    ["--force-fa-decode", "[9]"]),
    "serve config broken json": (["serve", "{m}", "--swaa-config", "{x"], ["--swaa-config", "{x"]),
    "serve config bad window": (["serve", "{m}", "--swaa-config", '{"sliding_window_size": 0}'],
                                ["--swaa-config", "sliding_window_size=0"]),
    "serve config not an object": (["serve", "{m}", "--swaa-config", "[1]"], ["--swaa-config", "[1]"]),
    "serve config layer beyond model": (["serve", "{m}", "--swaa-config", '{"non_sliding_layers": [7]}'],
                                        ["--swaa-config", "[7]"]),
    "serve model missing": (["serve", "/nowhere/model"], ["/nowhere/model"]),
    "serve hf-overrides": (["serve", "{m}", "--hf-overrides", "{}"], ["--hf-overrides"]),
    "serve no model": (["serve"], ["model"]),
    # lm-eval-task: a task over a dataset; lm-eval: its own parser and the swaa model's arguments, before it starts
    "lm-eval-task dataset missing": (_with(LMT, "--dataset", "{d}/missing.jsonl"), ["--dataset", "missing.jsonl"]),
    "lm-eval-task dataset broken": (_with(LMT, "--dataset", "{d}/longbench_answer_e.json"), ["--dataset", "'E'"]),
    "lm-eval-task max-new-tokens 0": (_with(LMT, "--max-new-tokens", "0"), ["--max-new-tokens", "0"]),
    "lm-eval-task sample-first 0": (_with(LMT, "--sample-first", "0"), ["--sample-first", "0"]),
    "lm-eval-task name a/b": (_with(LMT, "--name", "a/b"), ["--name", "'a/b'", "underscores"]),
    "lm-eval-task out is a file": (_with(LMT, "--out", "{d}/afile"), ["--out", "afile"]),
    "lm-eval-task model missing": (_with(LMT, "--dataset", "synthetic:128", "--model", "/nowhere/model"),
                                   ["--model", "/nowhere/model"]),
    "lm-eval limit abc": (["lm-eval", "run", "--limit", "abc"], ["--limit", "abc"]),
    "lm-eval unknown option": (["lm-eval", "run", "--bogus", "1"], ["--bogus"]),
    "lm-eval swaa unknown argument": (LME + ["--model_args", "window=64"], ["--model_args", "['window']"]),
    "lm-eval swaa window 0": (LME + ["--model_args", "sliding_window_size=0"], ["--model_args",
                                                                              "sliding_window_size=0"]),
    "lm-eval swaa keep_first -1": (LME + ["--model_args", "sliding_window_size=64,keep_first=-1"],
                                   ["--model_args", "keep_first=-1"]),
    "lm-eval swaa settings and fields": (LME + ["--model_args", "settings={d}/ok.json,keep_first=4"],
                                         ["--model_args", "not both"]),
    "lm-eval swaa settings need setting": (LME + ["--model_args", "settings={d}/two.json"],
                                           ["--model_args", "setting=<index or mark>"]),
    "lm-eval swaa batch size auto": (LME + ["--batch_size", "auto"], ["--batch_size", "'auto'"]),
    # info, reproduce, the command itself
    "info unknown option": (["info", "--verbose"], ["--verbose"]),
    "reproduce unknown notebook": (["reproduce", "nope.ipynb"], ["nope.ipynb"]),
    "reproduce device bogus": (["reproduce", "--device", "bogus"], ["--device", "bogus"]),
    "reproduce out is a file": (["reproduce", "--out", "{d}/afile"], ["--out", "afile"]),
    "reproduce model missing": (["reproduce", "--model", "/nowhere/model"], ["--model", "/nowhere/model"]),
    "reproduce no notebooks there": (["reproduce", "--notebooks", "{d}/nonb"], ["--notebooks", "nonb"]),
    "no command": ([], ["COMMAND"]),
    "unknown command": (["frobnicate"], ["frobnicate"]),
}


def _tree(root: Path) -> dict:
    """Every entry under ``root``, a file with its size and modification time."""
    return {str(p.relative_to(root)): p.is_file() and (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _argv(argv, files, out):
    subs = {"{d}": str(files), "{o}": str(out), "{m}": str(files / "model"), "{port}": str(_free_port())}
    result = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        result.append(a)
    return result


def _check_line(err: str, names) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("swaa") and ": error: " in lines[0], lines[0]
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # relative defaults (out/speed, figures) land where they are watched
    for name in ("SWAA_JUDGE_URL", "SWAA_JUDGE_MODEL", "OPENAI_BASE_URL", "RANK"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_table_is_large():
    assert len(CASES) >= 100 and {argv[0] for argv, _ in CASES.values() if argv} >= {
        "reproduce", "eval", "lazy", "distill", "sft", "info", "serve", "speed", "advise", "lm-eval", "lm-eval-task"}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_exit_2_and_writes_nothing(case, files, clean_env, capsys):
    argv, names = CASES[case]
    out = clean_env / "out"
    before = _tree(clean_env), _tree(files)
    code = main(_argv(argv, files, out))
    _check_line(capsys.readouterr().err, names)
    assert code == 2
    assert (_tree(clean_env), _tree(files)) == before          # nothing written, the output folder not even made


@pytest.mark.parametrize("case", ["eval batch-size -1", "serve fa-decode abc", "advise length -1", "lazy n 0",
                                  "eval settings missing"])
def test_a_mistake_through_the_real_command(case, files, clean_env):
    argv, names = CASES[case]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "swaa.cli", *_argv(argv, files, clean_env / "out")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    _check_line(res.stderr, names)
    assert res.stdout == "" and list(clean_env.iterdir()) == []


@pytest.mark.parametrize("argv", [EVAL, LAZY, DISTILL, SFT, SPEED], ids=lambda a: a[0])
def test_a_second_writer_on_the_folder_is_refused(argv, files, clean_env, capsys):
    """Every writer holds its --out: with the folder held (here by this process), a run fails at once."""
    from swaa.store.lock import FolderLock
    out = clean_env / "out"
    argv = argv if argv[0] == "speed" else argv + ["--model", "{m}"]
    with FolderLock(out):
        before = _tree(clean_env)
        assert main(_argv(argv, files, out)) == 2
        _check_line(capsys.readouterr().err, [f"swaa {argv[0]}: error: {out} is in use by process {os.getpid()}"])
        assert _tree(clean_env) == before
    assert not out.exists()                     # the lock made the folder and took it away again, empty


def test_serve_listens_on_this_machine_unless_told(capsys):
    from swaa.cli.parser import build_parser
    from swaa.cli.serve import serve_command
    a, extra = build_parser().parse_known_args(["serve", "default", "--port", "8000"])
    assert a.host == "127.0.0.1" and extra == ["--port", "8000"]
    cmd = serve_command("m", SWAAConfig(), extra, a.host)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[-2:] == ["--port", "8000"]
    a, _ = build_parser().parse_known_args(["serve", "default", "--host", "0.0.0.0"])
    assert a.host == "0.0.0.0"
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    assert "default: 127.0.0.1" in " ".join(capsys.readouterr().out.split())
