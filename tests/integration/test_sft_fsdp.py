"""`swaa sft` under accelerate's FSDP config (FSDP2) on 2 CPU processes over gloo, against the same run in one process.

A tiny random-weight Llama, saved as a model folder with the default model's tokenizer, trained by the command itself
under W=8, S=2 with FA decode and LoRA r=4, clipping at 0.5 (below every step's gradient norm, so every step clips):
in 2 processes launched by ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` (sft_cli_job.py), once
straight through and once interrupted after step 3 and run again; and here in one process with gradient accumulation
2, which takes the same 2 batches per step.

Tolerance. DDP on 2 processes equals one process to the bit (test_sft.py): a mean of two gradients does not depend on
the order of its terms. FSDP differs in one place: the gradient norm that clipping divides by is summed shard by
shard, so the clip factor can move by an ulp, and the adapter after 4 steps by ~1e-7 (measured: 1.1e-7 at weights up
to 0.13; losses within one ulp). The tolerance, atol 1e-6 + rtol 1e-5, is about ten times that; clipping each shard
by its own norm (the mistake a sharded loop can make) moves the adapter by 5e-3.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from swaa.cli import main

from .tiny_models import make_model

ROOT = Path(__file__).resolve().parents[2]
TOL = dict(atol=1e-6, rtol=1e-5)
FILES = {"adapter": "adapter/adapter_model.safetensors", "merged": "merged/model.safetensors"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The tiny model folder, the data, and the command's arguments (without --out)."""
    from transformers import AutoTokenizer

    from swaa.models import default_model_path
    root = tmp_path_factory.mktemp("fsdp")
    tok = AutoTokenizer.from_pretrained(default_model_path())
    make_model("llama", seed=2, vocab_size=len(tok)).save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    words = ["apple", "river", "stone", "cloud", "maple", "ember", "frost", "delta"]
    rows = [dict(prompt=f"Item {i}: the code word is {w}. " * (1 + i % 3) + "What is the code word?", response=w)
            for i, w in enumerate(words)]
    pd.DataFrame(rows).to_json(root / "d.jsonl", orient="records", lines=True)
    args = ["--model", str(root / "tiny"), "--data", str(root / "d.jsonl"), "--swaa",
            '{"sliding_window_size": 8, "keep_first": 2, "force_fa_decode": true}', "--max-steps", "4",
            "--batch-size", "2", "--save-every", "2", "--lr", "5e-3", "--r", "4", "--alpha", "8", "--dropout", "0.1",
            "--max-grad-norm", "0.5"]
    return root, args


def _launch(work, out: str, stop: int = 0) -> list[dict]:
    from tests.conftest import free_port
    root, args = work
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--main_process_port", str(free_port()),
           str(ROOT / "tests" / "integration" / "sft_cli_job.py"), str(stop), *args, "--out", str(root / out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return sorted((json.loads(l) for l in res.stdout.splitlines() if l.startswith('{"rank"')), key=lambda r: r["rank"])


@pytest.fixture(scope="module")
def fsdp(work):
    return _launch(work, "fsdp")


@pytest.fixture(scope="module")
def one(work):
    root, args = work
    assert main(["sft", *args, "--gradient-accumulation-steps", "2", "--out", str(root / "one")]) == 0
    return root / "one"


def _weights(out: Path) -> dict:
    return {name: load_file(out / f) for name, f in FILES.items()}


def _assert_same_run(a: Path, b: Path, exact: bool) -> None:
    """The adapter, the merged model and the loss log of two runs: equal to the bit, or within TOL."""
    wa, wb = _weights(a), _weights(b)
    for name in FILES:
        assert wa[name].keys() == wb[name].keys() and len(wa[name]) > 20, name
        for k in wa[name]:
            if exact:
                assert torch.equal(wa[name][k], wb[name][k]), (name, k)
            else:
                torch.testing.assert_close(wa[name][k], wb[name][k], **TOL, msg=f"{name} {k}")
    la, lb = (pd.read_json(p / "loss.jsonl", lines=True) for p in (a, b))
    assert la["step"].tolist() == lb["step"].tolist() == [1, 2, 3, 4]
    assert la["tokens"].tolist() == lb["tokens"].tolist() and la["lr"].tolist() == lb["lr"].tolist()
    if exact:
        assert la["loss"].tolist() == lb["loss"].tolist()
    else:
        assert la["loss"].tolist() == pytest.approx(lb["loss"].tolist(), rel=2e-7)    # one ulp of ~10.8


def test_fsdp_shards_the_model_and_trains_what_one_process_does(work, fsdp, one):
    root, _ = work
    assert [r["codes"] for r in fsdp] == [[0], [0]] and [r["world"] for r in fsdp] == [2, 2]
    assert [r["distributed"] for r in fsdp] == ["FSDP2", "FSDP2"] and fsdp[0]["adapter_tensors"] == 24
    assert fsdp[0]["adapter_sha256"] == fsdp[1]["adapter_sha256"]          # the adapter gathered in each process
    for r in fsdp:                  # every parameter a DTensor shard; each process holds half of the elements
        assert r["sharded"] == r["params"] > 60 and r["local"] * 2 == r["full"]
    report = json.loads((root / "fsdp" / "report.json").read_text())
    assert report["distributed"] == "FSDP2" and report["processes"] == 2 and report["resumed_from"] is None
    assert json.loads((one / "report.json").read_text())["distributed"] == "one process"
    _assert_same_run(root / "fsdp", one, exact=False)
    adapter = _weights(root / "fsdp")["adapter"]
    assert max(v.abs().max().item() for k, v in adapter.items() if "lora_B" in k) > 1e-3     # it trained


def test_interrupted_fsdp_run_resumes_to_the_uninterrupted_one(work, fsdp):
    root, _ = work
    again = _launch(work, "again", stop=3)
    assert [r["codes"] for r in again] == [[130, 0], [130, 0]]         # interrupted after step 3, then resumed
    assert json.loads((root / "again" / "report.json").read_text())["resumed_from"] == 2
    _assert_same_run(root / "again", root / "fsdp", exact=True)


def test_the_checkpoint_resumes_in_one_process(work, fsdp, one, tmp_path, capsys):
    """The step-2 checkpoint of the 2-process FSDP run continues in one process with 2 batches per step; with 1 it
    is refused in one line that names the option and the value that resume."""
    root, args = work
    ckpt = root / "fsdp" / "checkpoints" / "step-000002"
    assert {f.name for f in ckpt.iterdir()} == {"adapter.safetensors", "optimizer.pt", "scheduler.pt", "state.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert (state["step"], state["processes"], state["gradient_accumulation_steps"], state["batches_per_step"]) == (
        2, 2, 1, 2)
    assert len(state["order"]) == 8 and all(len(b) == 2 for b in state["order"])
    assert len(load_file(ckpt / "adapter.safetensors")) == 24                 # q, k, v x 4 layers x A, B: whole
    out = tmp_path / "moved"
    shutil.copytree(root / "fsdp", out, ignore=shutil.ignore_patterns("step-000004", "adapter", "merged"))
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["sft", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--gradient-accumulation-steps=2" in err and "2 processes" in err, err
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert main(["sft", *args, "--gradient-accumulation-steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["resumed_from"] == 2
    _assert_same_run(out, root / "fsdp", exact=False)


@pytest.mark.parametrize("env, names", [
    (dict(FSDP_VERSION="1"), ["fsdp_version: 1", "set fsdp_version: 2", "configs/accelerate/fsdp.yaml"]),
    (dict(FSDP_VERSION="2", FSDP_CPU_RAM_EFFICIENT_LOADING="true"),
     ["fsdp_cpu_ram_efficient_loading: true", "set it to false"])])
def test_fsdp_settings_that_cannot_run_are_one_line(work, tmp_path, monkeypatch, capsys, env, names):
    _, args = work
    for k, v in dict(env, ACCELERATE_USE_FSDP="true").items():
        monkeypatch.setenv(k, v)
    assert main(["sft", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("swaa sft: error: ") and all(n in err for n in names), err
    assert list(tmp_path.iterdir()) == []


def test_an_accelerator_outside_the_launch_is_refused(monkeypatch):
    """Accelerator() on a machine without a GPU does not join a torchrun launch: each process would train alone."""
    from accelerate import Accelerator

    from swaa.training.sft_parallel import adopt_launch
    accelerator = Accelerator(cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"the launch has 2 processes but this Accelerator sees 1: .*cpu=True"):
        adopt_launch(accelerator)


def test_a_checkpoint_of_the_per_process_format_is_refused(work, tmp_path, capsys):
    _, args = work
    ckpt = tmp_path / "out" / "checkpoints" / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps(dict(step=2, fingerprint="0123456789abcdef", order=[])))
    assert main(["sft", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "earlier per-process format" in err and "--no-resume" in err, err
