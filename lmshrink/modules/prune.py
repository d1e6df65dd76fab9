"""``Prune``: retraining-free pruning of a fine-tuned encoder, run with Lightning's ``validate`` (or ``test``).

    python train.py validate --config configs/prune/kprune_stereoset.yaml \\
        --model.teacher_path runs/teacher_stereoset_minilm/model --model.flops_keep_ratio 0.5

Pruning needs no training loop, so it runs in ``setup`` and the evaluation loop then measures the pruned
model: ``validate`` reports the dev split (what pruning papers tune on), ``test`` the held-out split (what a
study reports). GroupMetrics logs per-group accuracy and the per-group delta to the dense model ("who pays").

Under DDP the sample is not sharded: rank 0 prunes and broadcasts the result, every rank slices the same
model, and the evaluation is sharded as usual. The pruned model is written as a HF directory (``save_dir``)
and a JSON record (FLOPs with s, kept units per layer, wall time, metrics) goes to the run directory.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from lmshrink.backbones import accepted_inputs, load_finetuned, load_tokenizer, model_task, select_inputs
from lmshrink.errors import OptionError
from lmshrink.export import label_names, set_class_names
from lmshrink.modules.base import LmshrinkModule
from lmshrink.options import as_settings, init_defaults
from lmshrink.paths import free_path, write_new_json
from lmshrink.pruning.settings import KPruneSettings
from lmshrink.pruning.settings import KwonSettings
from lmshrink.pruning.encoder.run import METHODS, PruneMethod, prune_encoder
from lmshrink.data.pruning_sample import samples_for_tokens
from lmshrink.pruning.encoder.slicing import save_sliced, shrink_to_widths


METHOD_OPTIONS = {
    "kprune": {"flops_keep_ratio", "num_tokens", "sample_batch_size", "kprune", "seed"},
    "kwon": {"flops_keep_ratio", "num_samples", "sample_batch_size", "kwon", "seed"},
    "l1-unstructured": {"sparsity"},
    "l1-heads": {"sparsity"},
}
"""The method-specific options each method reads (``teacher_path``, ``seq_len`` and ``save_dir`` apply to all)."""


def refuse_ignored_options(method: str, options) -> None:
    """An option the chosen method does not read, set away from its default, is a mistake: refuse it by name
    (litgpt's ``validate_args``) instead of silently dropping it."""
    defaults = init_defaults(Prune)
    ignored = sorted(set().union(*METHOD_OPTIONS.values()) - METHOD_OPTIONS[method])
    changed = [name for name in ignored if options[name] != defaults[name]]
    if changed:
        name = changed[0]
        value = options[name]
        if is_dataclass(value):  # a settings group: name the field that was set
            default = defaults[name]
            field = next(f.name for f in fields(value) if getattr(value, f.name) != getattr(default, f.name))
            name, value = f"{name}.{field}", getattr(value, field)
        raise OptionError(f"--model.{name}={value} is ignored by --model.method={method}, which reads "
                          f"{sorted(METHOD_OPTIONS[method])}; remove it")


class Prune(LmshrinkModule):
    """Prune a fine-tuned encoder without retraining (K-prune, Kwon et al., magnitude), measured per group against
    the dense model; runs under ``train.py validate`` or ``test``."""

    reference_name = "dense"
    """GroupMetrics logs the pruned model's per-group deltas to the dense model."""

    def __init__(
        self,
        teacher_path: str,
        num_labels: int = 3,
        method: PruneMethod = "kprune",
        flops_keep_ratio: float = 0.5,
        sparsity: float = 0.4,
        num_tokens: int = 100_000,
        num_samples: int = 2048,
        sample_batch_size: int = 32,
        seq_len: float | None = None,
        kprune: KPruneSettings = KPruneSettings(),
        kwon: KwonSettings = KwonSettings(),
        seed: int = 0,
        save_dir: str | None = None,
    ) -> None:
        """
        Args:
            teacher_path: The fine-tuned model to prune: a local HF directory or a TeacherFineTune ``.ckpt``.
            num_labels: Number of classes (linked from the datamodule).
            method: ``kprune`` (K-prune), ``kwon`` (Kwon et al.), ``l1-unstructured`` or ``l1-heads`` (magnitude).
            flops_keep_ratio: Share of encoder FLOPs kept (kprune, kwon); K-prune's ``--constraint c`` is ``1 - c``.
            sparsity: Share of encoder weights (l1-unstructured) or heads (l1-heads) removed.
            num_tokens: K-prune's sample size in tokens of the training split (100K in the paper).
            num_samples: Kwon et al.'s sample size in labeled training examples (2048 in the paper).
            sample_batch_size: Batch size of the pruning sample; it sets the scale of the gradient scores, so keep
                it fixed across runs you compare (32 in both papers for GLUE).
            seq_len: Sequence length s of the FLOPs model; default: the mean token length of the val split.
            kprune: K-prune's settings (``--model.kprune.lam_rep``, ``.faithful``, ...; method kprune only).
            kwon: Kwon et al.'s settings (``--model.kwon.mask_tuning``, ``.faithful``, ...; method kwon only).
            seed: Seed of the sample draw.
            save_dir: Write the pruned model there as a HF directory with its tokenizer (must be new or empty);
                default: ``pruned_model`` in the run directory (``pruned_model-N`` if taken).
        """
        super().__init__()
        self.save_hyperparameters()
        if method not in METHODS:
            raise OptionError(f"method={method!r} is unknown; choose one of {list(METHODS)}")
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels}: pruning supports classification heads; a regression head (STS-B "
                             f"style) would need the spec's MSE predictive loss, which is not implemented")
        if not 0 < flops_keep_ratio <= 1:
            raise OptionError(f"--model.flops_keep_ratio={flops_keep_ratio} must be in (0, 1]")
        if not 0 <= sparsity < 1:
            raise OptionError(f"--model.sparsity={sparsity} must be in [0, 1)")
        for option, value in {"num_tokens": num_tokens, "num_samples": num_samples,
                              "sample_batch_size": sample_batch_size}.items():
            if value < 1:
                raise OptionError(f"--model.{option}={value} must be >= 1")
        if seq_len is not None and not seq_len > 0:
            raise OptionError(f"--model.seq_len={seq_len} must be > 0")
        # The settings groups as dataclasses (the CLI records plain dicts in hparams; the values here are what ran).
        self.kprune, self.kwon = as_settings(kprune, KPruneSettings), as_settings(kwon, KwonSettings)
        self.check_options(self.hparams)
        self.model, self.tokenizer_path = load_finetuned(teacher_path, num_labels)
        self.task = model_task(self.model)  # a token classifier (NER) prunes and reports per word
        self.model.eval()
        self.dense = copy.deepcopy(self.model).requires_grad_(False)
        self.model_inputs = accepted_inputs(self.model)
        self.record: dict | None = None
        self.save_dir: str | None = None

    @staticmethod
    def check_options(options) -> None:
        """Refuse an option the chosen method ignores; needs no model, so ``check_args`` (and the study's check of
        every stage before the first runs) calls it on parsed options too."""
        options = options.as_dict() if hasattr(options, "as_dict") else dict(options)
        options["kprune"] = as_settings(options["kprune"], KPruneSettings)
        options["kwon"] = as_settings(options["kwon"], KwonSettings)
        refuse_ignored_options(options["method"], options)

    def given_models(self) -> dict[str, tuple[str, nn.Module]]:
        return {"teacher_path": (str(self.hparams.teacher_path), self.model)}

    @property
    def source_model(self) -> str:
        return f"{self.hparams.method} of {self.hparams.teacher_path}"

    def output_dirs(self, run_dir: str | Path, subcommand: str) -> dict[str, Path]:
        # The default (``pruned_model`` in the run directory) takes a free name; only a named one can collide.
        return {"save_dir": Path(self.hparams.save_dir)} if self.hparams.save_dir else {}

    # --------------------------------------------------------------------------------------------- pruning
    def setup(self, stage: str) -> None:
        if self.record is not None:
            return
        hp = self.hparams
        datamodule = self.trainer.datamodule
        outcome = None
        if self.trainer.is_global_zero:
            batches, seq_len = self._sample(datamodule)
            device = self.trainer.strategy.root_device  # prune where the model will run (a GPU if there is one)
            batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
            outcome = prune_encoder(copy.deepcopy(self.model).to(device), batches, hp.method, seq_len,
                                    hp.flops_keep_ratio, hp.sparsity, self.kprune, self.kwon)
            outcome = ({key: value.cpu() for key, value in outcome.model.state_dict().items()}, outcome.record)
        state, record = self.trainer.strategy.broadcast(outcome, src=0)
        if hp.method != "l1-unstructured":
            shrink_to_widths(self.model, record["heads_per_layer"], record["neurons_per_layer"])
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False)
        settings = {"kprune": asdict(self.kprune), "kwon": asdict(self.kwon)}.get(hp.method, {})
        self.record = record | {"teacher_path": hp.teacher_path, "seed": hp.seed, "settings": settings}
        self.save_dir = self._save_model(self.trainer.log_dir)  # log_dir is collective: every rank asks

    def _sample(self, datamodule) -> tuple[list[dict[str, Tensor]], float]:
        """The seeded, fixed-order sample of the training split, through the datamodule's public API."""
        hp = self.hparams
        seq_len = hp.seq_len if hp.seq_len is not None else datamodule.mean_length("val")
        lengths = datamodule.token_lengths("train")
        if hp.method == "kprune":
            count = samples_for_tokens(hp.num_tokens, sum(lengths) / len(lengths), len(lengths))
        else:
            count = min(hp.num_samples, len(lengths))
        keys = self.model_inputs + (["labels"] if hp.method == "kwon" else [])
        return datamodule.seeded_sample("train", count, hp.seed, hp.sample_batch_size, keys), seq_len

    def _save_model(self, log_dir: str | None) -> str | None:
        directory = self.hparams.save_dir
        if directory is None and log_dir is not None:
            directory = str(free_path(log_dir, "pruned_model", ""))
        if directory is None or not self.trainer.is_global_zero:
            return directory
        set_class_names(self.model, label_names(self.trainer.datamodule))
        if self.hparams.method == "l1-unstructured":
            self.model.save_pretrained(directory)
        else:
            save_sliced(self.model, directory)
        load_tokenizer(self.tokenizer_path).save_pretrained(directory)
        return directory

    # ------------------------------------------------------------------------------------------ evaluation
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**select_inputs(batch, self.model_inputs)).logits

    def _eval_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)
        dense_logits = self.dense(**select_inputs(batch, self.model_inputs)).logits
        return {"preds": logits.argmax(-1), "logits": logits, "reference_preds": dense_logits.argmax(-1),
                "reference_logits": dense_logits}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch)

    def on_validation_end(self) -> None:
        self._write_record("val")

    def on_test_end(self) -> None:
        self._write_record("test")

    def _write_record(self, stage: str) -> None:
        log_dir = self.trainer.log_dir  # collective: every rank calls it
        metrics = {key: float(value) for key, value in self.trainer.callback_metrics.items()
                   if key.startswith(f"{stage}/")}
        self._write(stage, log_dir, metrics)

    @rank_zero_only
    def _write(self, stage: str, log_dir: str | None, metrics: dict[str, float]) -> None:
        record = self.record | {"stage": stage, "model_dir": self.save_dir, "metrics": metrics}
        for directory in filter(None, {log_dir, self.save_dir}):
            write_new_json(directory, f"pruning_record_{stage}", record, default=str)
