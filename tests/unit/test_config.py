"""SWAAConfig: validation, per-layer plan, mark, dict/JSON round trip, settings lists, layer patterns."""
import copy
import json
import pickle
import warnings

import pytest

from swaa import SWAAConfig, layers_to_pattern, load_settings, pattern_to_layers


def test_defaults_are_the_originals():
    c = SWAAConfig()
    assert (c.sliding_window_size, c.keep_first, c.force_fa_decode, c.non_sliding_layers) == (None, 0, False, [])
    assert c.is_full and c.mark == "full"


@pytest.mark.parametrize("kw, needle", [
    (dict(sliding_window_size=0), "sliding_window_size=0"),
    (dict(sliding_window_size=-5), "sliding_window_size=-5"),
    (dict(sliding_window_size=2.5), "sliding_window_size=2.5"),
    (dict(sliding_window_size="2k"), "sliding_window_size='2k'"),
    (dict(sliding_window_size=True), "sliding_window_size=True"),
    (dict(keep_first=-1), "keep_first=-1"),
    (dict(keep_first=1.5), "keep_first=1.5"),
    (dict(keep_first=None), "keep_first=None"),
    (dict(force_fa_decode="yes"), "force_fa_decode='yes'"),
    (dict(force_fa_decode=[0, -2]), "-2"),
    (dict(non_sliding_layers=[1, "3"]), "'3'"),
    (dict(non_sliding_layers=[2, 2]), "[2]"),
    (dict(non_sliding_layers=5), "non_sliding_layers=5"),
    (dict(non_sliding_layers="SFX"), "'X'"),
])
def test_invalid_fields_name_the_value(kw, needle):
    with pytest.raises(ValueError) as e:
        SWAAConfig(**kw)
    assert needle in str(e.value)


def test_assignment_is_validated_and_rolled_back():
    c = SWAAConfig(sliding_window_size=16)
    with pytest.raises(ValueError, match="keep_first=-3"):
        c.keep_first = -3
    assert c.keep_first == 0 and c["keep_first"] == 0
    c.keep_first = 4
    assert c["keep_first"] == 4 and c.to_dict()["keep_first"] == 4


def test_layers_beyond_the_model_are_ignored_with_one_warning_per_config_and_model():
    c = SWAAConfig(sliding_window_size=8, non_sliding_layers=[30, 0, 34], force_fa_decode=[31])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.validate_layers(35)                              # all in range: silent
    with pytest.warns(UserWarning, match=r"non_sliding_layers \[30, 34\]; force_fa_decode \[31\] are beyond the 30 "
                                         r"layers of m \(indices 0\.\.29\) and are ignored"):
        c.validate_layers(30, "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.validate_layers(30, "m")                         # once per (config, model)
        c.validate_layers(30, "m")
    with pytest.warns(UserWarning, match=r"force_fa_decode \[31\] are beyond the 31 layers of other"):
        c.validate_layers(31, "other")
    plans = [c.layer(i).window for i in range(30)]
    assert plans == [None] + [8] * 29                     # layer 0 full; the rest slide; 30, 34 are never asked
    assert not any(c.layer(i).fa_decode for i in range(30))


def test_layer_lists_are_kept_as_written():
    c = SWAAConfig(sliding_window_size=2000, non_sliding_layers=[5, 3, 1], force_fa_decode=[2, 0])
    assert c.non_sliding_layers == [5, 3, 1] and c.force_fa_decode == [2, 0]
    assert c.to_dict()["non_sliding_layers"] == [5, 3, 1]
    assert c.mark == "swa=2k_sink=0_falayer=3_from5_step-2_fadec"          # the original's, from the order given
    assert SWAAConfig.from_json(c.to_json()).mark == c.mark
    assert [c.layer(i).window for i in range(6)] == [2000, None, 2000, None, 2000, None]


def test_per_layer_plan():
    c = SWAAConfig(sliding_window_size=8, keep_first=2, force_fa_decode=[1], non_sliding_layers=[2])
    assert (c.layer(0).window, c.layer(0).keep_first, c.layer(0).fa_decode) == (8, 2, False)
    assert (c.layer(1).window, c.layer(1).keep_first, c.layer(1).fa_decode) == (8, 2, True)
    assert c.layer(2).window is None
    assert SWAAConfig().layer(0).window is None
    assert SWAAConfig(sliding_window_size=4, force_fa_decode=True).layer(7).fa_decode


@pytest.mark.parametrize("cfg, mark", [
    (SWAAConfig(), "full"),
    (SWAAConfig(sliding_window_size=2000), "swa=2k_sink=0"),
    (SWAAConfig(sliding_window_size=2048, keep_first=100), "swa=2k_sink=100"),
    (SWAAConfig(sliding_window_size=8000, keep_first=10, force_fa_decode=True), "swa=8k_sink=10_fadec"),
    (SWAAConfig(sliding_window_size=2000, keep_first=100, force_fa_decode=True,
                non_sliding_layers=[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]),
     "swa=2k_sink=100_falayer=12_from1_step4_fadec"),
    (SWAAConfig(sliding_window_size=2000, non_sliding_layers=[3, 4, 9]), "swa=2k_sink=0_falayer=nonlazy3_from3"),
    (SWAAConfig(sliding_window_size=2000, non_sliding_layers=[7]), "swa=2k_sink=0_falayer=1_from7"),
    (SWAAConfig(sliding_window_size=64, keep_first=4), "swa=64_sink=4"),
    (SWAAConfig(sliding_window_size=4096, force_fa_decode=[0]), "swa=4k_sink=0_fadec"),
])
def test_mark_original_format(cfg, mark):
    assert cfg.mark == mark


def test_dict_json_pickle_round_trip():
    c = SWAAConfig(sliding_window_size=64, keep_first=4, force_fa_decode=[0, 2], non_sliding_layers="SFSF")
    assert c.non_sliding_layers == [1, 3]
    d = c.to_dict()
    assert d == {"sliding_window_size": 64, "keep_first": 4, "force_fa_decode": [0, 2], "non_sliding_layers": [1, 3]}
    assert c.dict() == d                                   # the original code's method name
    assert json.loads(json.dumps(c)) == d                  # it is a dict: json writes it as an object
    assert SWAAConfig.from_json(c.to_json()) == c
    assert SWAAConfig.from_dict(d) == c
    assert pickle.loads(pickle.dumps(c)) == c
    assert copy.deepcopy(c) == c and copy.deepcopy(c) is not c
    with pytest.raises(ValueError, match="unknown SWAAConfig fields \\['window'\\]"):
        SWAAConfig.from_dict({"window": 3})


def test_layer_pattern_sugar():
    assert pattern_to_layers("SF" * 3) == [1, 3, 5]
    assert pattern_to_layers("sssl") == [3]
    assert layers_to_pattern([1, 3, 5], 6) == "SFSFSF"
    assert SWAAConfig(sliding_window_size=4, non_sliding_layers="SF" * 18).non_sliding_layers == list(range(1, 36, 2))
    with pytest.raises(ValueError, match="non-empty"):
        pattern_to_layers("")


def test_load_original_settings_list(tmp_path):
    settings = [
        {"swaa_config": {"sliding_window_size": None, "keep_first": 0, "force_fa_decode": False,
                         "non_sliding_layers": []}, "model_list": ["/m/a", "/m/b"]},
        {"swaa_config": {"sliding_window_size": 2000, "keep_first": 10, "force_fa_decode": True,
                         "non_sliding_layers": [1, 3, 5]}, "model_list": ["/m/a"]},
    ]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(settings))
    out = load_settings(p)
    assert [c.mark for c, _ in out] == ["full", "swa=2k_sink=10_falayer=3_from1_step2_fadec"]
    assert out[0][1] == ["/m/a", "/m/b"] and out[1][1] == ["/m/a"]
    p.write_text(json.dumps([{"swaa_config": {"sliding_window_size": -1}}]))
    with pytest.raises(ValueError, match="settings entry 0: sliding_window_size=-1"):
        load_settings(p)
    p.write_text(json.dumps([{"model_list": []}]))
    with pytest.raises(ValueError, match="no 'swaa_config' key"):
        load_settings(p)


def test_config_of_reads_once_and_sees_changes():
    """The model integration asks for the config per layer and step: an unchanged dict is not parsed again, but a
    changed dict, or a change to the config it gave out, is never served stale."""
    from types import SimpleNamespace
    from swaa.config import config_of
    mc = SimpleNamespace(swaa_config={"sliding_window_size": 8, "keep_first": 2}, num_hidden_layers=4)
    a = config_of(mc)
    assert config_of(mc) is a and a.keep_first == 2
    mc.swaa_config["keep_first"] = 3
    assert config_of(mc).keep_first == 3
    b = config_of(mc)
    b.keep_first = 7                                      # the caller changed what it got: parse the dict again
    assert config_of(mc).keep_first == 3
    mc.swaa_config["non_sliding_layers"] = [9]
    with pytest.warns(UserWarning, match=r"\[9\] are beyond the 4 layers"):
        assert config_of(mc).layer(3).window == 8
    with pytest.raises(ValueError, match="in hf_overrides"):
        config_of(SimpleNamespace(swaa_config={"bogus": 1}, num_hidden_layers=2), source="hf_overrides")
    assert config_of(SimpleNamespace(num_hidden_layers=2)) is None
