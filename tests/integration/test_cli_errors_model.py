"""User mistakes that only the model can reveal (prompts beyond its positions, layers it lacks, weights that are not
there), on the default model: exit code 2, one line, nothing left behind; the corrected command then succeeds; and
two runs on one output folder, the first a real `swaa eval` process."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from swaa.cli import main
from swaa.store.lock import LOCK_NAME, FolderLock

ROOT = Path(__file__).resolve().parents[2]
POSITIONS = 160                     # the short model's: the ~230-token chat prompts below do not fit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two needle prompts of ~200 tokens, one SWAA setting, the default model with a 160-position config, and its
    folder without weights."""
    from transformers import AutoTokenizer

    from swaa.evaluation.data import make_task
    from swaa.models import default_model_path
    src = default_model_path()
    d = tmp_path_factory.mktemp("files")
    pd.DataFrame(make_task("needle", AutoTokenizer.from_pretrained(src), 200, n=2)).to_parquet(d / "tasks.parquet")
    (d / "settings.json").write_text(json.dumps([{"swaa_config": {"sliding_window_size": 32, "keep_first": 4}}]))
    config = json.loads((src / "config.json").read_text())
    for name, keep_weights, positions in (("short", True, POSITIONS), ("no_weights", False, None)):
        (d / name).mkdir()
        for f in src.iterdir():
            if f.name != "config.json" and (keep_weights or not f.name.endswith(".safetensors")):
                (d / name / f.name).symlink_to(f)
        (d / name / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=positions or
                                                              config["max_position_embeddings"])))
    return d


def _tree(root: Path) -> dict:
    """Every entry under ``root``, a file with its size and modification time (a folder's own time changes when the
    lock file comes and goes)."""
    return {str(p.relative_to(root)): p.is_file() and (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _eval(files, out, *extra):
    return ["eval", "--dataset", f"{files}/tasks.parquet", "--settings", f"{files}/settings.json", "--out", str(out),
            "--max-new-tokens", "4", *extra]


def _distill(files, out, *extra):
    return ["distill", "--dataset", f"{files}/tasks.parquet", "--out", str(out), "--n", "1", "--temperature", "0",
            "--max-new-tokens", "4", *extra]


CASES = {
    "eval prompt beyond the model": (_eval("{d}", "{o}", "--model", "{d}/short"),
                                     ["row 'needle-200-0-0'", f"{POSITIONS} positions", "--truncate-prompts"]),
    "distill prompt beyond the model": (_distill("{d}", "{o}", "--model", "{d}/short"),
                                        ["row 'needle-200-0-0'", "--truncate-prompts"]),
    "eval every prompt filtered": (_eval("{d}", "{o}", "--max-prompt-tokens", "5"),
                                   ["all 2 prompts are longer than --max-prompt-tokens=5"]),
    "distill every prompt filtered": (_distill("{d}", "{o}", "--max-prompt-tokens", "5"),
                                      ["--max-prompt-tokens=5"]),
    "eval model without weights": (_eval("{d}", "{o}", "--model", "{d}/no_weights"), ["no_weights"]),
    "lazy samples shorter than the window": (["lazy", "--dataset", "{d}/tasks.parquet", "--out", "{o}", "--w-recent",
                                              "4096"], ["--w-recent", "4096"]),
    "sft target module not in the model": (["sft", "--data", "{d}/tasks.parquet", "--response-column", "answer",
                                            "--swaa", '{"sliding_window_size": 32}', "--out", "{o}",
                                            "--target-modules", "nope"], ["['nope']", "--target-modules"]),
    "speed lengths beyond the model": (["speed", "--lengths", "10000", "--out", "{o}"], ["--lengths", "8192"]),
    "serve layer beyond the model": (["serve", "default", "--sliding-window-size", "64", "--non-sliding-layers",
                                      "1,30"], ["--non-sliding-layers", "[30]", "30 layers"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_found_with_the_model_is_one_line_and_leaves_nothing(case, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, names = CASES[case]
    out = tmp_path / "out"
    before = _tree(tmp_path), _tree(files)
    assert main([a.replace("{d}", str(files)).replace("{o}", str(out)) for a in argv]) == 2
    line = _line(capsys.readouterr().err)
    for n in names:
        assert n in line, (n, line)
    assert (_tree(tmp_path), _tree(files)) == before           # the lock taken and given back, its folder removed


def test_refused_runs_leave_nothing_and_the_corrected_one_succeeds(files, tmp_path, capsys):
    """Refused for an argument, then for prompts beyond the model (after the folder was taken), then run with
    --truncate-prompts in the same folder: the prompts keep their start and end, and the summary counts them."""
    out = tmp_path / "out"
    argv = _eval(files, out, "--model", f"{files}/short")
    assert main(argv + ["--max-new-tokens", "-1"]) == 2 and "--max-new-tokens" in _line(capsys.readouterr().err)
    assert main(argv) == 2 and "--truncate-prompts" in _line(capsys.readouterr().err)
    assert not out.exists()
    assert main(argv + ["--truncate-prompts"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["truncated"] == 2 and summary["n"] == 2 and summary["skipped_too_long"] == 0
    rows = [json.loads(l) for l in next((out / "rows").rglob("*.jsonl")).read_text().splitlines()]
    assert len(rows) == 2 and all(r["prompt_tokens"] <= POSITIONS - 4 for r in rows)
    assert not (out / LOCK_NAME).exists()

    d_out = tmp_path / "distill"
    assert main(_distill(files, d_out, "--model", f"{files}/short", "--truncate-prompts")) == 0
    assert "truncated 2 of 2 prompts" in capsys.readouterr().out
    original = pd.read_parquet(files / "tasks.parquet")["prompt"]
    for row, whole in zip(map(json.loads, (d_out / "distill.jsonl").read_text().splitlines()), original):
        assert len(row["prompt"]) < len(whole)                          # middle truncation: start and end kept
        assert whole.startswith(row["prompt"][:40]) and whole.endswith(row["prompt"][-40:])


def test_a_folder_made_for_other_data_names_the_overwrite_option(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"fingerprint": "0123456789abcdef"}\n')
    before = _tree(tmp_path)
    assert main(_eval(files, out)) == 2
    line = _line(capsys.readouterr().err)
    assert "holds results for another dataset" in line and "--overwrite" in line and "overwrite=True" not in line
    assert _tree(tmp_path) == before


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_fails_at_once(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _eval(files, out, "--max-new-tokens", "64", "--batch-size", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen([sys.executable, "-m", "swaa.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not ((out / LOCK_NAME).exists() and (out / LOCK_NAME).read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, "the first run never took the folder"
            time.sleep(0.1)
        t0 = time.time()
        assert main(argv) == 2
        assert _line(capsys.readouterr().err).startswith(f"swaa eval: error: {out} is in use by process {first.pid}")
        assert time.time() - t0 < 30 and first.poll() is None
    finally:
        first.kill()
        first.wait()
    with FolderLock(out):                       # the killed run's lock went with its process
        pass
