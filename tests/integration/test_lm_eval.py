"""The swaa model in lm-evaluation-harness, offline on the default model: a task over a local JSONL run through
`swaa lm-eval` (lm-eval's own command line) under a window config gives swaa eval's responses and exact-match scores
row by row; its log-likelihoods are swaa eval's answer NLL (the continuation as decode tokens)."""
import json

import pandas as pd
import pytest

from swaa import SWAAConfig
from swaa.cli import main

CFG = SWAAConfig(sliding_window_size=64, keep_first=4, force_fa_decode=True)
MODEL_ARGS = "sliding_window_size=64,keep_first=4,force_fa_decode=True"


@pytest.fixture(scope="module")
def rows():
    from transformers import AutoTokenizer

    from swaa.evaluation.data import make_task
    from swaa.models import default_model_path
    tok = AutoTokenizer.from_pretrained(default_model_path())
    return pd.DataFrame(make_task("needle", tok, 256, n=2) + make_task("qa", tok, 256, n=1))


@pytest.mark.slow
def test_lm_eval_scores_equal_swaa_eval_row_by_row(rows, tmp_path, capsys):
    from swaa.evaluation.run import EvalOptions, run_eval
    rows.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    assert main(["lm-eval-task", "--dataset", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "tasks"),
                 "--name", "swaa_needle", "--max-new-tokens", "24"]) == 0
    # the documented command, in-process: every argument after `lm-eval` is lm-eval's own
    assert main(["lm-eval", "run", "--model", "swaa", "--model_args", MODEL_ARGS, "--include_path",
                 str(tmp_path / "tasks"), "--tasks", "swaa_needle", "--apply_chat_template", "--batch_size", "1",
                 "--device", "cpu", "--output_path", str(tmp_path / "lm"), "--log_samples"]) == 0
    (samples,) = tmp_path.glob("lm/**/samples_swaa_needle_*.jsonl")
    lm = {s["doc"]["id"]: s for s in map(json.loads, samples.read_text().splitlines())}
    (results,) = tmp_path.glob("lm/**/results_*.json")
    info = json.loads(results.read_text())

    (res,) = run_eval([None], [CFG], rows, tmp_path / "eval", progress=False,
                      options=EvalOptions(max_new_tokens=24, batch_size=1, answer_nll=False))
    swa = pd.read_parquet(tmp_path / "eval" / res["parquet"]).set_index("id")
    assert res["mark"] == info["config"]["swaa_mark"] == "swa=64_sink=4_fadec"     # lm-eval ran under the window
    assert info["config"]["swaa_config"] == CFG.to_dict() and info["config"]["model_fingerprint"]
    assert sorted(lm) == sorted(swa.index)
    for rid, s in lm.items():
        assert s["filtered_resps"][0].strip() == swa.loc[rid, "response"].strip(), rid
        for m in ("exact_match", "contains", "token_f1"):
            assert s[m] == swa.loc[rid, m], (rid, m)
    assert swa["contains"].sum() > 0                                       # some answers found: not all zeros
    mean_em = sum(s["exact_match"] for s in lm.values()) / len(lm)
    assert info["results"]["swaa_needle"]["exact_match,none"] == pytest.approx(mean_em)


@pytest.mark.slow
def test_loglikelihood_is_the_answer_nll_with_fa_decode(rows):
    import torch

    from swaa.evaluation.lm_eval_model import SWAALM, check_model_args
    from swaa.evaluation.scoring import answer_nll
    args = dict(pretrained="default", sliding_window_size=16, keep_first=2, force_fa_decode=True, batch_size=2)
    cfg, rest = check_model_args(args)
    assert cfg.mark == "swa=16_sink=2_fadec" and rest == dict(pretrained="default", batch_size=2)
    lm = SWAALM(device="cpu", **args)
    tok = lm.tokenizer
    reqs = []
    for prompt, answer in zip(rows["prompt"][:3], rows["answer"][:3]):
        ctx = tok(prompt[-600:], add_special_tokens=False)["input_ids"]       # three lengths: a padded batch
        reqs.append((None, ctx, tok(" " + answer, add_special_tokens=False)["input_ids"]))
    got = lm._loglikelihood_tokens(reqs)
    for (_, ctx, cont), (ll, _) in zip(reqs, got):
        assert ll == pytest.approx(-answer_nll(lm.model, ctx, cont)["answer_nll"], abs=2e-3)
    # without FA decode on the continuation (the window everywhere) the numbers differ: the flag is what is tested
    with torch.no_grad():
        ids = torch.tensor([reqs[0][1] + reqs[0][2]])
        logp = torch.log_softmax(lm.model(ids, use_cache=False).logits[0, :-1].float(), -1)
    windowed = float(logp[-len(reqs[0][2]):].gather(-1, torch.tensor(reqs[0][2])[:, None]).sum())
    assert abs(windowed - got[0][0]) > 1e-2
    assert lm.get_model_info()["swaa_mark"] == "swa=16_sink=2_fadec"
