"""``Prune``: retraining-free pruning of a fine-tuned encoder, run with Lightning's ``validate`` (or ``test``).

    lmshrink validate --config configs/prune/kprune_stereoset.yaml \\
        --model.teacher_path runs/teacher_stereoset_minilm/model --model.method.flops_keep_ratio 0.5

Pruning needs no training loop, so it runs in ``setup`` and the evaluation loop then measures the pruned
model: ``validate`` reports the dev split (what pruning papers tune on), ``test`` the held-out split (what a
study reports). GroupMetrics logs per-group accuracy and the per-group delta to the dense model ("who pays").

Under DDP the sample is not sharded: rank 0 prunes and broadcasts the result, every rank slices the same
model, and the evaluation is sharded as usual. The pruned model is written as a HF directory (``save_dir``)
and a JSON record (FLOPs with s, kept units per layer, wall time, metrics) goes to the run directory.
"""

from __future__ import annotations

import copy
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from lmshrink.backbones import accepted_inputs, load_finetuned, load_tokenizer, model_task, select_inputs
from lmshrink.errors import OptionError
from lmshrink.export import label_names, set_class_names
from lmshrink.modules.base import LmshrinkModule
from lmshrink.modules.model_cards import plain_settings, start_model_card
from lmshrink.paths import free_path, write_new_json
from lmshrink.pruning.encoder.run import prune_encoder
from lmshrink.pruning.encoder.slicing import save_sliced, shrink_to_widths
from lmshrink.pruning.methods import EncoderMethod, KPrune
from lmshrink.pruning.score_precision import score_precision_of


class Prune(LmshrinkModule):
    """Prune a fine-tuned encoder without retraining (K-prune, Kwon et al., magnitude), measured per group against
    the dense model; runs under ``train.py validate`` or ``test``."""

    reference_name = "dense"
    """GroupMetrics logs the pruned model's per-group deltas to the dense model."""

    def __init__(
        self,
        teacher_path: str,
        num_labels: int = 3,
        method: EncoderMethod | None = None,
        sample_batch_size: int = 32,
        seq_len: float | None = None,
        seed: int = 0,
        save_dir: str | None = None,
    ) -> None:
        """
        Args:
            teacher_path: The fine-tuned model to prune: a local HF directory or a TeacherFineTune ``.ckpt``.
            num_labels: Number of classes (linked from the datamodule).
            method: ``KPrune`` (K-prune; the default, ``KPrune()``), ``Kwon`` (Kwon et al.), ``L1Unstructured`` or
                ``L1Heads`` (magnitude), with its own options (``--model.method Kwon --model.method.flops_keep_ratio 0.5``; ``--model.method.help
                Kwon`` lists them). An option the method does not take is refused.
            sample_batch_size: Batch size of the pruning sample; it sets the scale of the gradient scores, so keep
                it fixed across runs you compare (32 in both papers for GLUE).
            seq_len: Sequence length s of the FLOPs model; default: the mean token length of the val split.
            seed: Seed of the sample draw.
            save_dir: Write the pruned model there as a HF directory with its tokenizer (must be new or empty);
                default: ``pruned_model`` in the run directory (``pruned_model-N`` if taken).
        """
        super().__init__()
        self.save_hyperparameters()
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels}: pruning supports classification heads; a regression head (STS-B "
                             f"style) would need the spec's MSE predictive loss, which is not implemented")
        if sample_batch_size < 1:
            raise OptionError(f"--model.sample_batch_size={sample_batch_size} must be >= 1")
        if seq_len is not None and not seq_len > 0:
            raise OptionError(f"--model.seq_len={seq_len} must be > 0")
        self.method = method if method is not None else KPrune()
        if not isinstance(self.method, EncoderMethod):
            raise OptionError(f"--model.method={self.method!r} does not prune encoders; choose KPrune, Kwon, L1Heads or "
                              f"L1Unstructured")
        self.model, self.tokenizer_path = load_finetuned(teacher_path, num_labels)
        self.task = model_task(self.model)  # a token classifier (NER) prunes and reports per word
        self.model.eval()
        self.dense = copy.deepcopy(self.model).requires_grad_(False)
        self.model_inputs = accepted_inputs(self.model)
        self.record: dict | None = None
        self.save_dir: str | None = None

    def given_models(self) -> dict[str, tuple[str, nn.Module]]:
        return {"teacher_path": (str(self.hparams.teacher_path), self.model)}

    @property
    def source_model(self) -> str:
        return f"{self.method.short_name} of {self.hparams.teacher_path}"

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
            # a bf16 run ranks units in bf16 too (K-prune's scores, Kwon's Fisher); least squares stays float32 / fp64
            outcome = prune_encoder(copy.deepcopy(self.model).to(device), batches, self.method, seq_len,
                                    score_precision_of(self.trainer.precision))
            outcome = ({key: value.cpu() for key, value in outcome.model.state_dict().items()}, outcome.record)
        state, record = self.trainer.strategy.broadcast(outcome, src=0)
        if self.method.slices:
            shrink_to_widths(self.model, record["heads_per_layer"], record["neurons_per_layer"])
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False)
        self.record = record | {"teacher_path": hp.teacher_path, "seed": hp.seed}
        self.save_dir = self._save_model(self.trainer.log_dir)  # log_dir is collective: every rank asks

    def _sample(self, datamodule) -> tuple[list[dict[str, Tensor]], float]:
        """The seeded, fixed-order sample of the training split, through the datamodule's public API (none for a
        method that reads no data)."""
        hp = self.hparams
        seq_len = hp.seq_len if hp.seq_len is not None else datamodule.mean_length("val")
        if not self.method.reads_sample:
            return [], seq_len
        lengths = datamodule.token_lengths("train")
        count = self.method.sample_rows(sum(lengths) / len(lengths), len(lengths))
        keys = self.model_inputs + (["labels"] if self.method.reads_labels else [])
        return datamodule.seeded_sample("train", count, hp.seed, hp.sample_batch_size, keys), seq_len

    def _save_model(self, log_dir: str | None) -> str | None:
        directory = self.hparams.save_dir
        if directory is None and log_dir is not None:
            directory = str(free_path(log_dir, "pruned_model", ""))
        if directory is None or not self.trainer.is_global_zero:
            return directory
        set_class_names(self.model, label_names(self.trainer.datamodule))
        if self.method.slices:
            save_sliced(self.model, directory)
        else:
            self.model.save_pretrained(directory)
        load_tokenizer(self.tokenizer_path).save_pretrained(directory)
        hp = self.hparams
        outcome = {key: value for key, value in self.record.items() if "flops" in key or key.startswith("sparsity")}
        settings = plain_settings({"method": self.method.options(), "sample_batch_size": hp.sample_batch_size,
                                   "seq_len": hp.seq_len, "sample_seed": hp.seed, "outcome": outcome})
        start_model_card(self.trainer, self, directory,
                         {"parent": str(hp.teacher_path),
                          "method": f"Pruning without retraining, {self.method.short_name}",
                          "family": "pruning", "method_tag": self.method.name, "settings": settings},
                         self.model, {"trust_remote_code": self.method.slices, "quantized": None}, parent=self.dense)
        return directory

    def card_dirs(self) -> list[str | Path]:
        return [self.save_dir]

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
