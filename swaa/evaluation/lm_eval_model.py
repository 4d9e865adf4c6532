"""The ``swaa`` model of lm-evaluation-harness: lm-eval's HF model (HFLM) running under a SWAA config.

Importing this module registers ``swaa`` in lm-eval's model registry (lm-eval finds no third-party model without an
import, so ``swaa lm-eval ...`` imports it and hands every other argument to lm-eval's own command line):

    swaa lm-eval-task --dataset synthetic:512:2 --out out/lm_eval_tasks      # a task YAML over a local JSONL
    swaa lm-eval run --model swaa --model_args sliding_window_size=64,keep_first=4,force_fa_decode=True \\
        --include_path out/lm_eval_tasks --tasks swaa_synthetic --apply_chat_template --batch_size 1 --device cpu

Model arguments: ``pretrained`` (a model folder or hub id; ``default`` or none: the default model), the SWAA
fields ``sliding_window_size``, ``keep_first``, ``force_fa_decode``, ``non_sliding_layers`` (a list ``[1,3,5]`` or a
pattern such as ``SF``), or ``settings=FILE`` with ``setting=<index or mark>`` (an entry of a settings list), plus
HFLM's own (``dtype``, ``batch_size``, ``max_length``, ...). With none of the SWAA fields a saved SWAA model runs
under its own config, any other model at full attention. An argument HFLM does not know is an error, not ignored.

Generation goes through HFLM unchanged (``model.generate``: prompt tokens under the window, generated tokens as decode
steps). Log-likelihood requests are scored as :func:`swaa.evaluation.scoring.answer_nll` scores an answer: one
forward with ``prompt_length``, so the continuation's tokens are decode tokens (full attention under FA decode), as
they would be if generated; rolling log-likelihoods (perplexity) score the whole text as a prompt.

The tasks written by :func:`swaa.evaluation.lm_eval_task.write_task` score with ``swaa eval``'s own scoring, so
on the same rows, with the chat template, greedy decoding and the same number of new tokens, lm-eval's exact match
equals ``swaa eval``'s row by row (what must match: docs/evaluation.md).
"""
from __future__ import annotations

import inspect

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

__all__ = ["SWAALM", "check_model_args", "swaa_config_from_args", "SWAA_FIELDS"]

SWAA_FIELDS = ("sliding_window_size", "keep_first", "force_fa_decode", "non_sliding_layers")
_HFLM_ARGS = set(inspect.signature(HFLM.__init__).parameters) - {"self", "tokenizer", "kwargs"}


def swaa_config_from_args(fields: dict, settings: str | None = None, setting=None):
    """The SWAAConfig of the model arguments: the SWAA fields, or an entry of a settings-list file; None for none."""
    from ..config import SWAAConfig, load_settings
    if settings is not None:
        if fields:
            raise ValueError(f"give settings=FILE or the SWAA fields {sorted(fields)}, not both")
        cfgs = [c for c, _ in load_settings(settings)]
        marks = [c.mark for c in cfgs]
        if setting is None and len(cfgs) == 1:
            return cfgs[0]
        if isinstance(setting, int) and 0 <= setting < len(cfgs):
            return cfgs[setting]
        if setting in marks:
            return cfgs[marks.index(setting)]
        raise ValueError(f"settings={settings} lists {len(cfgs)} settings; choose one with setting=<index or mark> "
                         f"(got {setting!r}); marks: {marks}")
    if setting is not None:
        raise ValueError(f"setting={setting!r} needs settings=FILE (a settings-list JSON)")
    return SWAAConfig.from_dict(fields) if fields else None


def check_model_args(args: dict):
    """The swaa model's arguments checked without loading anything: (its SWAAConfig or None, the arguments left for
    HFLM). An argument neither takes is an error, as is a batch size that is not a whole number."""
    args = dict(args)
    unknown = sorted(set(args) - set(SWAA_FIELDS) - _HFLM_ARGS - {"settings", "setting"})
    if unknown:
        raise ValueError(f"the swaa model has no argument {unknown}; give {list(SWAA_FIELDS)}, settings, setting, "
                         "pretrained or one of lm-eval's HF model arguments")
    batch_size = args.pop("batch_size", 1)
    if not str(batch_size).isdigit() or int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r}: the swaa model takes a whole number >= 1 (no 'auto')")
    cfg = swaa_config_from_args({k: args.pop(k) for k in SWAA_FIELDS if k in args}, args.pop("settings", None),
                                args.pop("setting", None))
    return cfg, dict(args, batch_size=int(batch_size))


@register_model("swaa")
class SWAALM(HFLM):
    """HFLM on a model loaded by :func:`swaa.load_model` under the SWAA config of the model arguments."""

    def __init__(self, pretrained: str | None = "default", settings: str | None = None, setting=None,
                 device: str | None = None, dtype: str | None = None, batch_size=1, **kwargs):
        import torch

        from ..integrations.transformers import get_swaa_config, load_model
        from ..store.fingerprint import model_fingerprint
        cfg, kwargs = check_model_args(dict(kwargs, settings=settings, setting=setting, batch_size=batch_size))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok = load_model(None if pretrained in (None, "default") else pretrained, device=device,
                                dtype=None if dtype in (None, "auto") else dtype, swaa=cfg)
        self.swaa_config = get_swaa_config(model.config)
        self.model_fingerprint = model_fingerprint(model)
        self._rolling = False
        super().__init__(pretrained=model, tokenizer=tok, **kwargs)
        self.pretrained = str(pretrained)

    def get_model_info(self) -> dict:
        """What produced the results: the SWAA config and the model's fingerprint (no hub lookup)."""
        cfg = self.swaa_config
        return dict(model_num_parameters=sum(p.numel() for p in self.model.parameters()),
                    model_dtype=str(self.model.dtype), model_fingerprint=self.model_fingerprint,
                    swaa_config=cfg.to_dict() if cfg is not None else None, swaa_mark=cfg.mark if cfg else "full")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self._rolling = True
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._rolling = False

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """(log p(continuation | context), greedy?) per request; the continuation's tokens are decode tokens."""
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        step = override_bs or self.batch_size
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        res: list = [None] * len(requests)
        for start in tqdm(range(0, len(order), step), disable=disable_tqdm or self.rank != 0, desc="loglikelihood"):
            chunk = order[start:start + step]
            seqs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1):][:-1] for i in chunk]
            conts = [requests[i][2] for i in chunk]
            if any(len(c) > len(s) for c, s in zip(conts, seqs)):
                raise ValueError(f"a continuation is longer than the model's {self.max_length} positions")
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, s in enumerate(seqs):                     # right padding: positions count real tokens
                ids[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
            prompt_length = None if self._rolling else torch.tensor([len(s) - len(c) + 1 for s, c in zip(seqs, conts)])
            with torch.no_grad():
                logits = self.model(ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False,
                                    prompt_length=prompt_length).logits
            logp = F.log_softmax(logits.float(), dim=-1).cpu()
            for j, i in enumerate(chunk):
                n, cont = len(seqs[j]), torch.tensor(conts[j])
                lp = logp[j, n - len(cont):n]
                answer = (float(lp.gather(-1, cont[:, None]).sum()), bool((lp.argmax(-1) == cont).all()))
                res[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        return res
