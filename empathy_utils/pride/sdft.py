"""TRL's experimental SDFT with its on-policy replies sampled by the study's decoding loop.

Without vLLM, ``SDFTTrainer`` samples each step's replies with ``generate``: the batch holds every prompt
``num_generations`` times, so each prompt is run that many times, and every row keeps stepping until the
longest reply is done. Here each distinct prompt is run once and its keys and values are gathered for
its copies; the replies are then drawn by :func:`empathy_utils.backends.decode_dropping_finished`, with
``generate``'s temperature, top-k, top-p and min-p from TRL's generation config, one draw per row and
step from torch's global generator. The sampling distribution is the same; the draws are not
``generate``'s once a reply has ended and left the batch, so a run is not bit-identical to the
``transformers`` path (``pride.sdft_rollouts`` chooses; the setting is in SDFT's fingerprint). Settings
the loop does not implement (a repetition penalty, extra ``generation_kwargs``, FSDP) go
to TRL's own path unchanged.
"""

from __future__ import annotations

import torch
from trl.experimental.sdft import SDFTTrainer
from trl.models.utils import unwrap_model_for_generation

from ..backends import decode_dropping_finished
from ..prefix_sharing import regroup_cache


class StudyRolloutSDFTTrainer(SDFTTrainer):
    """``SDFTTrainer`` whose transformers-side sampling runs each prompt once (module docstring)."""

    def _study_loop_serves(self) -> bool:
        config = self.generation_config
        return config.repetition_penalty in (None, 1.0) and not self.args.generation_kwargs and not self.is_fsdp_enabled

    def _sampling_warpers(self):
        from transformers import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        config = self.generation_config
        warpers = LogitsProcessorList()
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            warpers.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(config.top_p))
        if config.min_p is not None:
            warpers.append(MinPLogitsWarper(config.min_p))
        return warpers

    def _generate_transformers(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        if not self._study_loop_serves():
            return super()._generate_transformers(prompt_ids)
        # TRL's own unwrapping (gradient checkpointing off, DeepSpeed's weights gathered) around the loop
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                         generation_kwargs=self.generation_kwargs) as model:
            return prompt_ids, self._sample(model, prompt_ids)

    def _sample(self, model, prompt_ids: list[list[int]]) -> list[list[int]]:
        device = self.accelerator.device
        distinct: dict[tuple[int, ...], int] = {}
        for ids in prompt_ids:
            distinct.setdefault(tuple(ids), len(distinct))
        width = max(len(ids) for ids in distinct)
        padded = torch.full((len(distinct), width), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(padded)
        for ids, row in distinct.items():
            padded[row, width - len(ids):], mask[row, width - len(ids):] = torch.tensor(ids), 1
        padded, mask = padded.to(device), mask.to(device)
        copies = torch.tensor([distinct[tuple(ids)] for ids in prompt_ids], device=device)
        cache = None
        if width > 1:  # each distinct prompt but its last token once; each copy then runs that token itself
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                cache = model(input_ids=padded[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                              use_cache=True, logits_to_keep=1).past_key_values
            cache = regroup_cache(cache, copies)
        return decode_dropping_finished(model, padded[copies], mask[copies], cache, self.max_completion_length,
                                        self._sampling_warpers(), set(self.eos_token_ids))
