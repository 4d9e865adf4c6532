"""The tuning panel driven programmatically on the default model: every control changes what it should."""
import pytest
import torch

from swaa import SWAAConfig, load_model
from swaa.attention.masks import dense_mask
from swaa.ui.widgets import SWAAPanel, layer_patterns


@pytest.fixture(scope="module")
def panel():
    model, tok = load_model()
    return SWAAPanel(model, tok, n_tokens=160, window=64, keep_first=0)


def test_initial_state(panel):
    cfg = panel.result.config
    assert cfg == SWAAConfig(sliding_window_size=64)
    assert panel.result.loss > panel.baseline.loss
    assert "swa=64_sink=0" in panel.status.value
    assert panel.result.sink_mass.shape == (30,) and panel.result.sink_mass.max() == 0   # window hides token 0


def test_controls_change_the_outputs(panel):
    r64 = panel.result
    panel.window.value = 8
    r8 = panel.result
    assert r8.config.sliding_window_size == 8 and r8.loss > r64.loss + 0.2

    panel.keep_first.value = 4
    sinks = panel.result
    assert sinks.config.keep_first == 4 and sinks.loss < r8.loss - 0.2
    assert sinks.sink_mass[12:].mean() > 0.2                       # the sink is visible again in late layers
    assert "swa=8_sink=4" in panel.status.value

    panel.fa_decode.value = True
    fad = panel.result
    assert fad.config.force_fa_decode is True
    assert fad.continuation_loss < sinks.continuation_loss         # the answer part sees everything
    # the mask picture: prompt rows windowed, decode rows full
    m = torch.as_tensor(panel.figures["mask"].axes[0].images[0].get_array()).bool()
    assert torch.equal(m, dense_mask(160, 160, 8, 4, fa_from=fad.prompt_length)[0, 0])

    panel.pattern.value = "odd layers (SF...)"
    mixed = panel.result
    assert mixed.config.non_sliding_layers == layer_patterns(30)["odd layers (SF...)"] == list(range(1, 30, 2))
    assert mixed.loss < fad.loss

    panel.window.value = "full"
    assert panel.result.config.is_full
    assert panel.result.loss == pytest.approx(panel.baseline.loss, abs=1e-5)
    assert len(panel.history) >= 6 and panel.history[-1]["mark"] == "full"
