"""LoRA SFT under SWAA: the assistant mask, exact loss and gradients against a dense reference, resume, merge, errors.

Tiny random-weight Llama models (tests/integration/tiny_models.py) for training; the default model's tokenizer for
the chat template.
"""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from swaa import SWAAConfig, apply_swaa, load_model
from swaa.integrations.transformers import prompt_length_from_labels
from swaa.training.sft import SFTConfig, add_lora, latest_checkpoint, merge_and_save, read_loss_log, train_sft
from swaa.training.sft_data import IGNORE_INDEX, collate, encode_dataset, encode_example, length_grouped_batches

from .tiny_models import make_model, with_independent

ROOT = Path(__file__).resolve().parents[2]
CFG = SWAAConfig(sliding_window_size=4, keep_first=1, force_fa_decode=True)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from swaa.models import default_model_path
    t = AutoTokenizer.from_pretrained(default_model_path())
    t.pad_token = t.pad_token or t.eos_token
    return t


class TinyTok:
    """A character-level tokenizer with a chat template, for the tiny models (vocab 97)."""
    pad_token_id = 0
    chat_template = "x"

    def apply_chat_template(self, msgs, add_generation_prompt=False, tokenize=False):
        text = "".join(f"<{m['role'][0]}>{m['content']}|" for m in msgs)
        return text + ("<a>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % 90) for c in text]}

    def save_pretrained(self, path):
        pass


def _tiny_data(n=12):
    words = ["alpha beta gamma", "one two", "delta", "red green blue yellow", "x y z w v", "sun moon"]
    return pd.DataFrame([dict(prompt=f"q{i}: " + words[i % 6] * (1 + i % 3), response=f"ans {i} " + words[(i + 1) % 6])
                         for i in range(n)])


def test_labels_mask_exactly_the_prompt_tokens(tok):
    prompt, response = "Where is the key? It is in the drawer, said Bob.", "In the drawer."
    ex = encode_example(tok, prompt, response)
    ids, labels = ex["input_ids"], ex["labels"]
    n_prompt = sum(1 for l in labels if l == IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    user = [{"role": "user", "content": prompt}]
    rendered_prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    rendered_full = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    # masked tokens are the template's own prompt rendering, assistant header included, token for token
    assert ids[:n_prompt] == tok(rendered_prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[:n_prompt]) == rendered_prompt and rendered_prompt.endswith("<|im_start|>assistant\n")
    # trained tokens are the answer and its end-of-turn token, nothing else
    assert tok.decode(ids[n_prompt:]) == response + "<|im_end|>" == rendered_full[len(rendered_prompt):].rstrip()
    assert labels[n_prompt:] == ids[n_prompt:]
    batch = collate([ex, encode_example(tok, "short?", "yes")], tok.pad_token_id)
    assert prompt_length_from_labels(batch["labels"]).tolist()[0] == n_prompt
    assert (batch["labels"][1][batch["attention_mask"][1] == 0] == IGNORE_INDEX).all()     # right padding


def test_max_length_filter_reports_and_batches_group_lengths(tok):
    df = pd.DataFrame(dict(prompt=["a " * 10, "b " * 300, "c " * 12, "d " * 400], response=["x", "y", "z", "w"]))
    ex, rep = encode_dataset(tok, df, max_length=200)
    assert rep["rows"] == 4 and rep["kept"] == 2 and rep["dropped_too_long"] == 2 and len(ex) == 2
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    batches = length_grouped_batches(lengths, 2, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(lengths[b[0]] - lengths[b[1]]) <= 3 for b in batches)
    assert batches == length_grouped_batches(lengths, 2, seed=0) != length_grouped_batches(lengths, 2, seed=0, epoch=1)


def test_bad_inputs_name_the_value_and_the_fix(tok, tmp_path):
    with pytest.raises(ValueError, match=r"empty \(0 rows\).*swaa distill"):
        encode_dataset(tok, pd.DataFrame(columns=["prompt", "response"]))
    with pytest.raises(ValueError, match=r"lacks columns \['response'\].*response_column='answer'"):
        encode_dataset(tok, pd.DataFrame(dict(prompt=["p"], answer=["a"])))
    with pytest.raises(ValueError, match=r"all 1 examples are longer than max_length=5 .*raise max_length"):
        encode_dataset(tok, pd.DataFrame(dict(prompt=["p " * 20], response=["a"])), max_length=5)
    with pytest.raises(ValueError, match=r"target modules \['qq_proj'\] are not in LlamaForCausalLM.*'q_proj'"):
        add_lora(make_model("llama"), SFTConfig(target_modules=("q_proj", "qq_proj")))
    with pytest.raises(ValueError, match="SFTConfig.batch_size=0 must be >= 1"):
        SFTConfig(batch_size=0)
    from swaa.training.distill import generate_samples, select_distilled
    with pytest.raises(ValueError, match="engine='vllm' needs the teacher's vLLM engine"):
        generate_samples(None, None, ["x"], engine="vllm")
    with pytest.raises(ValueError, match=r"temperature=0 with n=4: .*temperature=0 \(greedy\) with n=1"):
        generate_samples(None, None, ["x"], temperature=0, n=4)
    with pytest.raises(ValueError, match="engine='vlm' is not one of"):
        generate_samples(None, None, ["x"], engine="vlm")
    with pytest.raises(ValueError, match="no self-distilled rows"):
        select_distilled([])


def _batch():
    # two rows, different prompt lengths, right padding; prompts longer than the window
    ex = [dict(input_ids=list(range(5, 25)), labels=[IGNORE_INDEX] * 13 + list(range(18, 25))),
          dict(input_ids=list(range(30, 44)), labels=[IGNORE_INDEX] * 9 + list(range(39, 44)))]
    return collate(ex, pad_token_id=0)


@pytest.mark.parametrize("lora", [True, False])
def test_one_step_matches_the_dense_reference(lora):
    batch = _batch()
    models = []
    for reference in (False, True):
        m = make_model("llama", seed=1)
        if lora:
            m = add_lora(apply_swaa(m, CFG) if not reference else m, SFTConfig(r=4, alpha=8, dropout=0.0))
            torch.manual_seed(7)
            with torch.no_grad():                      # B = 0 at init would hide A's gradient
                for n, p in m.named_parameters():
                    if "lora_B" in n:
                        p.normal_(0, 0.1)
        elif not reference:
            apply_swaa(m, CFG)
        if reference:
            with_independent(m.get_base_model() if lora else m, CFG)
        models.append(m.train())
    swaa_model, ref_model = models
    loss = swaa_model(**batch, use_cache=False).loss         # prompt lengths come from the labels (13 and 9)
    pl = prompt_length_from_labels(batch["labels"])
    assert pl.tolist() == [13, 9]
    ref_loss = ref_model(**batch, prompt_length=pl, use_cache=False).loss
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in swaa_model.named_parameters() if p.requires_grad}
    ref_grads = {n: p.grad for n, p in ref_model.named_parameters() if p.requires_grad}
    assert grads.keys() == ref_grads.keys() and len(grads) >= (24 if lora else 30)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    # and FA decode matters here: without it the loss differs
    m2 = apply_swaa(make_model("llama", seed=1), SWAAConfig(sliding_window_size=4, keep_first=1))
    if not lora:
        assert abs(m2(**batch, use_cache=False).loss.item() - loss.item()) > 1e-3


def _train(out, steps, interrupt_at=None, grad_ckpt=False):
    model = make_model("llama", seed=2)
    cfg = SFTConfig(r=4, alpha=8, dropout=0.1, batch_size=3, max_steps=steps, save_every=2, lr=5e-3,
                    gradient_checkpointing=grad_ckpt)

    def stop(step, loss):
        if step == interrupt_at:
            raise KeyboardInterrupt
    return train_sft(model, TinyTok(), _tiny_data(), out, swaa=CFG, config=cfg, on_step=stop, progress=False)


def test_resume_continues_from_the_saved_step(tmp_path):
    full = _train(tmp_path / "a", 6)
    assert full.steps == 6 and full.resumed_from is None
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", 6, interrupt_at=5)          # step 5 logged but not checkpointed
    assert latest_checkpoint(tmp_path / "b").name == "step-000004" and len(read_loss_log(tmp_path / "b")) == 5
    again = _train(tmp_path / "b", 6, grad_ckpt=True)     # checkpointing changes nothing but memory
    assert again.resumed_from == 4
    la, lb = read_loss_log(tmp_path / "a"), read_loss_log(tmp_path / "b")
    assert [r["step"] for r in lb] == list(range(1, 7))
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-6, abs=1e-7)
    assert [r["lr"] for r in la] == [r["lr"] for r in lb]
    wa = {n: p for n, p in full.model.named_parameters() if "lora" in n}
    wb = {n: p for n, p in again.model.named_parameters() if "lora" in n}
    assert wa.keys() == wb.keys() and len(wa) == 24
    for n in wa:
        torch.testing.assert_close(wa[n], wb[n], rtol=1e-5, atol=1e-7, msg=n)
    assert la[-1]["loss"] < la[0]["loss"]                  # it learns
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-000006" / "state.json").read_text())
    assert state["step"] == 6 and len(state["order"]) == 6 and state["swaa"] == CFG.to_dict()
    with pytest.raises(ValueError, match="other data or settings.*new output folder"):
        train_sft(make_model("llama", seed=2), TinyTok(), _tiny_data(8), tmp_path / "b", swaa=CFG,
                  config=SFTConfig(r=4, alpha=8, batch_size=3, max_steps=6), progress=False)


def test_merged_model_reloads_with_its_config_and_logits(tmp_path):
    run = _train(tmp_path / "run", 2)
    batch = _batch()
    with torch.no_grad():
        adapter_logits = run.model(input_ids=batch["input_ids"][:1, :20], prompt_length=13).logits
    path = merge_and_save(run.model, TinyTok(), tmp_path / "merged")
    merged, _ = _load_tiny(path)
    assert merged.config.swaa_config == CFG and merged.config._attn_implementation == "swaa"
    with torch.no_grad():
        merged_logits = merged(input_ids=batch["input_ids"][:1, :20], prompt_length=13).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-5)


def _load_tiny(path):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    from swaa.integrations.transformers import get_swaa_config
    return apply_swaa(model, get_swaa_config(model.config)), None


@pytest.mark.slow
def test_default_model_merged_folder_loads_with_load_model(tmp_path, tok):
    """The real path end to end on the default model: 1 step, merge, load_model(path) applies the SWAA config."""
    model, tok = load_model()
    cfg = SWAAConfig(sliding_window_size=16, keep_first=4, force_fa_decode=True)
    data = pd.DataFrame(dict(prompt=["The code is 4417. Some filler text here, and more. What is the code?"],
                             response=["4417"]))
    run = train_sft(model, tok, data, tmp_path / "sft", swaa=cfg, config=SFTConfig(max_steps=1, batch_size=1),
                    progress=False)
    ids = torch.tensor([encode_example(tok, data["prompt"][0], "4417")["input_ids"]])
    with torch.no_grad():
        ref = run.model(input_ids=ids, prompt_length=ids.shape[1] - 3).logits
    path = merge_and_save(run.model, tok, tmp_path / "merged")
    reloaded, _ = load_model(path)
    assert reloaded.config.swaa_config == cfg
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, prompt_length=ids.shape[1] - 3).logits, ref,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_self_distillation_resumes_without_recomputing(tmp_path, monkeypatch):
    """A run cut short (last row lost) resumes: only the missing batch is sampled again, and it gives the same row."""
    import swaa.training.distill as distill
    from swaa.evaluation.data import make_task
    model, tok = load_model()
    df = pd.DataFrame(make_task("needle", tok, 64, n=3))
    kw = dict(n=2, max_new_tokens=4, batch_size=2, progress=False)
    first = distill.self_distill(model, tok, df, tmp_path, **kw)
    assert [len(r["responses"]) for r in first] == [2, 2, 2] and all(len(r["scores"]) == 2 for r in first)
    path = tmp_path / "distill.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])          # a crash while writing the last row
    calls = []
    real = distill.generate_samples
    monkeypatch.setattr(distill, "generate_samples", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = distill.self_distill(model, tok, df, tmp_path, **kw)
    assert len(calls) == 1 and len(calls[0]) == 1                          # only the last batch (one prompt)
    assert again == first
    sel = distill.select_distilled(again, threshold=0.0, per_prompt=1)
    assert len(sel) == 3 and sel.attrs["samples"] == 6


def test_cli_names_a_bad_swaa_value(tmp_path, capsys):
    from swaa.cli import main
    grid = str(ROOT / "data" / "settings" / "smollm2_135m.json")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    for argv, msg in [
            (["--data", str(data), "--swaa", "w=64"], r"--swaa 'w=64' is neither a JSON object nor an existing file"),
            (["--data", str(data), "--swaa", '{"sliding_window_size": -3}'], r"sliding_window_size"),
            (["--data", str(data), "--swaa", grid], r"lists \d+ settings; choose one with --setting .*'swa=64_sink=4_fadec'")]:
        assert main(["sft", *argv, "--out", str(tmp_path / "out")]) == 2      # bad input: exit 2, message on stderr
        assert re.search(msg, capsys.readouterr().err)
    from swaa.cli.checks import swaa_arg
    assert swaa_arg(grid, "swa=64_sink=4_fadec") == SWAAConfig(sliding_window_size=64, keep_first=4,
                                                                force_fa_decode=True)


def _torchrun(*args):
    import os
    import subprocess
    import sys
    import socket
    with socket.socket() as sock:                   # a free port: other jobs on the machine may hold the default
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(ROOT / "tests" / "integration" / "ddp_sft_job.py"), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return sorted((json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")), key=lambda r: r["rank"])


def _untimed(log: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in log]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_resumes_and_equals_one_process(tmp_path):
    """The multi-process path (what accelerate/torchrun DDP runs), on 2 CPU processes over gloo, against one process
    that accumulates the same 2 batches per step. With 2 processes DDP's mean of two gradients is exactly the
    accumulated mean (a sum of two floats does not depend on their order; halving is exact), so the adapters and the
    loss logs are equal to the bit, clipping included."""
    from .ddp_sft_job import job, lora_sum
    full = _torchrun(tmp_path / "a")
    assert [r["world"] for r in full] == [2, 2] and [r["distributed"] for r in full] == ["DDP", "DDP"]
    assert full[0]["wsum"] == full[1]["wsum"]                                       # gradients all-reduced
    one = train_sft(**job(accumulation=2), out=tmp_path / "one", progress=False)
    assert one.report["distributed"] == "one process" and lora_sum(one.model) == full[0]["wsum"]
    assert _untimed(read_loss_log(tmp_path / "one")) == _untimed(full[0]["log"])
    assert [r["interrupted"] for r in _torchrun(tmp_path / "b", 3)] == [True, True]
    again = _torchrun(tmp_path / "b")
    assert [r["resumed_from"] for r in again] == [2, 2]
    assert again[0]["wsum"] == full[0]["wsum"]
    assert [r["loss"] for r in again[0]["log"]] == [r["loss"] for r in full[0]["log"]]
    assert {f.name for f in (tmp_path / "b" / "checkpoints" / "step-000004").iterdir()} == {
        "adapter.safetensors", "optimizer.pt", "scheduler.pt", "state.json"}


@pytest.mark.slow
def test_two_process_cli_holds_the_folder_once(tmp_path):
    """`swaa sft` under torchrun: the main process holds --out for both (a second holder would refuse the run)."""
    import os
    import subprocess
    import sys
    from tests.conftest import free_port
    (tmp_path / "d.jsonl").write_text("".join(f'{{"prompt": "Say {w}.", "response": "{w}"}}\n' for w in
                                              ("hi", "yes", "no", "ok")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "swaa.cli", "sft", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "out"), "--swaa",
           '{"sliding_window_size": 8, "keep_first": 2}', "--max-steps", "1", "--batch-size", "1", "--no-merge"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr[-3000:]
    assert '"steps": 1' in res.stdout and (tmp_path / "out" / "adapter").is_dir()
    assert not (tmp_path / "out" / ".swaa.lock").exists()

