"""The paper's settings lists shipped in data/settings: every entry, the original's mark for each, and their layers
beyond a model's depth ignored with one warning, as the original code ignored them."""
import json
import warnings
from pathlib import Path

import pytest

from swaa import SWAAConfig, load_settings
from swaa.evaluation.settings_grids import default_model_grid

SETTINGS = Path(__file__).resolve().parents[2] / "data" / "settings"
# file -> (entries in the paper repository's Eval/settings_list file it holds, layers of the model it names)
PAPER = {"paper_qwen3_4b.json": (24, 36),           # non_sft_settings_4b.json
         "paper_qwen3_30b_a3b.json": (15, 48),      # non_sft_settings_30b.json
         "paper_llama3_1_8b.json": (15, 32),        # non_sft_settings_llama3_8b.json
         "paper_qwen3_sft.json": (14, 36)}          # sft_models_settings.json (Qwen3-4B and Qwen3-30B-A3B checkpoints)


def _entries(name):
    return [e["swaa_config"] for e in json.loads((SETTINGS / name).read_text())]


def original_mark(raw: dict) -> str:
    """The original SWAAConfig.mark restated from its definition: "swa={W // 1000}k_sink={S}", then for more than
    two non-sliding layers "_falayer={n}_from{first}_step{gap}" when the gaps between consecutive entries (as
    written) are all equal, else "_falayer=nonlazy{n}_from{first}"; for one or two "_falayer={n}_from{first}";
    "_fadec" when force_fa_decode is truthy. Full attention: "full" here (the original gave "")."""
    w = raw["sliding_window_size"]
    if w is None:
        return "full"
    parts = [f"swa={int(w // 1000)}k", f"sink={raw['keep_first']}"]
    layers = raw["non_sliding_layers"]
    gaps = {b - a for a, b in zip(layers, layers[1:])}
    if len(layers) > 2:
        parts.append(f"falayer={len(layers)}_from{layers[0]}_step{gaps.pop()}" if len(gaps) == 1
                     else f"falayer=nonlazy{len(layers)}_from{layers[0]}")
    elif layers:
        parts.append(f"falayer={len(layers)}_from{layers[0]}")
    if raw["force_fa_decode"]:
        parts.append("fadec")
    return "_".join(parts)


def test_every_entry_of_the_paper_lists_is_shipped():
    counts = {name: len(load_settings(SETTINGS / name)) for name in PAPER}
    assert counts == {name: n for name, (n, _) in PAPER.items()}
    assert sum(counts.values()) == 68


@pytest.mark.parametrize("name", list(PAPER))
def test_mark_is_the_originals_for_every_entry(name):
    raws = _entries(name)
    marks = [SWAAConfig.from_dict(raw).mark for raw in raws]
    assert marks == [original_mark(raw) for raw in raws]
    assert len(set(marks)) == len(marks)                               # no two entries share a result name
    for raw in raws:                                                   # as written, in any order
        for layers in (raw["non_sliding_layers"][::-1], raw["non_sliding_layers"][1:] + raw["non_sliding_layers"][:1]):
            shuffled = {**raw, "non_sliding_layers": layers}
            assert SWAAConfig.from_dict(shuffled).mark == original_mark(shuffled)


# Marks the paper's own code produced, read from its training folders' names (the model_list entries of
# Eval/settings_list/sft_models_settings.json, e.g. ".../Qwen3-4B-Instruct-2507-sft-fusang-swa=2k_sink=0_falayer=13_
# from1_step4_fadec/final-merged"; SFT/sft_swaa.py names them "{model}-sft-fusang-{swaa_config.mark}" and trains
# with non_sliding_layers=list(range(1, 50, 4))): the layer lists run past the models' 36 and 48 layers.
@pytest.mark.parametrize("sinks, layers, mark", [
    (100, [], "swa=2k_sink=100_fadec"),
    (0, list(range(1, 50, 4)), "swa=2k_sink=0_falayer=13_from1_step4_fadec"),
    (100, list(range(0, 50, 2)), "swa=2k_sink=100_falayer=25_from0_step2_fadec"),
    (100, list(range(1, 50, 2)), "swa=2k_sink=100_falayer=25_from1_step2_fadec"),
])
def test_marks_in_the_paper_repositorys_folder_names(sinks, layers, mark):
    cfg = SWAAConfig(sliding_window_size=2000, keep_first=sinks, force_fa_decode=True, non_sliding_layers=layers)
    assert cfg.mark == mark
    assert any(mark in m for _, models in load_settings(SETTINGS / "paper_qwen3_sft.json") for m in models)


@pytest.mark.parametrize("name", list(PAPER))
def test_layers_beyond_the_model_are_ignored_with_one_warning_each(name):
    _, depth = PAPER[name]
    for cfg, models in load_settings(SETTINGS / name):
        beyond = [i for i in cfg.non_sliding_layers if i >= depth]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for _ in range(3):                                         # every call: still one warning
                cfg.validate_layers(depth, models[0])
        assert len(seen) == (1 if beyond else 0), (cfg, [str(w.message) for w in seen])
        if beyond:
            assert f"non_sliding_layers {beyond} are beyond the {depth} layers of {models[0]}" in str(seen[0].message)
        kept = SWAAConfig.from_dict({**cfg.to_dict(), "non_sliding_layers": [i for i in cfg.non_sliding_layers
                                                                               if i < depth]})
        assert [cfg.layer(i) for i in range(depth)] == [kept.layer(i) for i in range(depth)]


def test_paper_lists_name_layers_beyond_the_models_as_the_paper_did():
    top = {name: max((i for raw in _entries(name) for i in raw["non_sliding_layers"]), default=-1) for name in PAPER}
    assert top == {"paper_qwen3_4b.json": 47, "paper_qwen3_30b_a3b.json": 47, "paper_llama3_1_8b.json": 47,
                   "paper_qwen3_sft.json": 47}


def test_default_model_grid_is_the_shipped_file_and_fits_the_model():
    shipped = load_settings(SETTINGS / "smollm2_135m.json")
    assert [c for c, _ in shipped] == default_model_grid() and shipped[0][0].is_full
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cfg, _ in shipped:
            cfg.validate_layers(30)
