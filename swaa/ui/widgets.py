"""The tuning panel: sliders for window and keep_first, an FA-decode toggle and a non-sliding-layer pattern;
each change re-runs one forward of the model on a sample text and redraws the mask, the per-layer sink mass and
the losses (a second or two on CPU for the default model at 384 tokens).

    from swaa.ui.widgets import SWAAPanel
    panel = SWAAPanel(model, tok); panel          # in a notebook cell
    panel.window.value = 32                       # programmatic use: every change updates panel.result
"""
from __future__ import annotations

import ipywidgets as W
import torch

from ..analysis.attention_maps import Probe, probe
from ..config import SWAAConfig, layers_to_pattern

__all__ = ["SWAAPanel", "layer_patterns"]

WINDOWS = ["full", 4, 8, 16, 32, 64, 128, 256, 512]


def layer_patterns(num_layers: int) -> dict[str, list[int]]:
    """Named choices of non-sliding (full-attention) layers, as in the paper's interleaving grids."""
    half = num_layers // 2
    return {
        "none (all sliding)": [],
        "odd layers (SF...)": list(range(1, num_layers, 2)),
        "even layers (FS...)": list(range(0, num_layers, 2)),
        "every 4th (SSSF...)": list(range(3, num_layers, 4)),
        "first half": list(range(half)),
        "second half": list(range(half, num_layers)),
        "last 4": list(range(num_layers - 4, num_layers)),
    }


class SWAAPanel:
    """Interactive SWAA tuning on one model and one sample text; ``result`` holds the latest :class:`Probe`."""

    def __init__(self, model, tokenizer, input_ids: torch.Tensor | None = None, n_tokens: int = 384,
                 mask_tokens: int | None = None, window=64, keep_first: int = 0, fa_decode: bool = False,
                 prompt_fraction: float = 0.75, sink_from: int | None = None):
        from ..evaluation.data import offline_token_ids

        self.model, self.tok = model, tokenizer
        self.ids = input_ids if input_ids is not None else offline_token_ids(tokenizer, n_tokens)
        self.mask_tokens = mask_tokens or self.ids.shape[1]          # draw the mask of the whole sample text
        self.prompt_fraction = prompt_fraction
        self.sink_from = sink_from if sink_from is not None else self.ids.shape[1] // 2   # sink mass of later queries
        self.num_layers = model.config.num_hidden_layers
        self.patterns = layer_patterns(self.num_layers)
        style = {"description_width": "90px"}
        self.window = W.SelectionSlider(options=WINDOWS, value=window, description="window W",
                                        continuous_update=False, style=style)
        self.keep_first = W.IntSlider(value=keep_first, min=0, max=64, description="keep_first S",
                                      continuous_update=False, style=style)
        self.fa_decode = W.ToggleButton(value=fa_decode, description="FA decode", icon="bolt",
                                        tooltip="decode tokens (the last quarter of the text) use full attention")
        self.pattern = W.Dropdown(options=list(self.patterns), value="none (all sliding)",
                                  description="full layers", style=style)
        self.status = W.HTML()
        self.mask_out, self.sink_out = W.Output(), W.Output()
        self.widget = W.VBox([
            W.HBox([self.window, self.keep_first]), W.HBox([self.fa_decode, self.pattern]), self.status,
            W.HBox([self.mask_out, self.sink_out]),
        ])
        self.baseline: Probe = probe(model, self.ids, SWAAConfig(), prompt_fraction, from_pos=self.sink_from)
        self.result: Probe | None = None
        self.figures: dict = {}
        self.history: list[dict] = []
        for w in (self.window, self.keep_first, self.fa_decode, self.pattern):
            w.observe(lambda change: self.update(), names="value")
        self.update()

    def config(self) -> SWAAConfig:
        w = self.window.value
        return SWAAConfig(sliding_window_size=None if w == "full" else int(w), keep_first=self.keep_first.value,
                          force_fa_decode=bool(self.fa_decode.value),
                          non_sliding_layers=self.patterns[self.pattern.value])

    def update(self) -> Probe:
        """Re-run the probe for the current widget values and redraw."""
        import matplotlib.pyplot as plt
        from IPython import get_ipython
        from IPython.display import display

        from .plots import plot_masks, plot_sink_mass

        cfg = self.config()
        self.status.value = f"<i>running {cfg.mark} ...</i>"
        self.result = r = probe(self.model, self.ids, cfg, self.prompt_fraction, from_pos=self.sink_from)
        self.history.append(dict(mark=cfg.mark, loss=r.loss, continuation_loss=r.continuation_loss))
        b = self.baseline
        self.status.value = (
            f"<b>{cfg.mark}</b> &nbsp; loss <b>{r.loss:.3f}</b> (full {b.loss:.3f}) &nbsp;|&nbsp; "
            f"continuation {r.continuation_loss:.3f} (full {b.continuation_loss:.3f}) &nbsp;|&nbsp; "
            f"{self.ids.shape[1]} tokens, prompt {r.prompt_length}, pattern "
            f"{layers_to_pattern(cfg.non_sliding_layers, self.num_layers)}")
        first_sliding = next((i for i in range(self.num_layers) if cfg.layer(i).window is not None), 0)
        self.figures = {
            "mask": plot_masks([cfg], length=self.mask_tokens, layer=first_sliding,
                               prompt_fraction=self.prompt_fraction),
            "sink": plot_sink_mass({"full attention": b.sink_mass, cfg.mark: r.sink_mass},
                                   non_sliding=cfg.non_sliding_layers),
        }
        self.figures["mask"].set_size_inches(3.2, 3.4)
        in_kernel = get_ipython() is not None
        for out, key in ((self.mask_out, "mask"), (self.sink_out, "sink")):
            out.clear_output(wait=True)
            if in_kernel:
                with out:
                    display(self.figures[key])
            plt.close(self.figures[key])          # shown once, in the panel (still savable)
        return r

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
