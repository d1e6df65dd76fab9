"""GroupedTextDataModule: real data formats, every bad input named before training, DDP-exact loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmshrink.data.loading import EvalShardSampler
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.metrics.groups import IGNORE_INDEX
from tests.data.fixtures import civilcomments_frame, multinli_frame, scotus_frame, write


def make(tiny_bert_dir, **kwargs) -> GroupedTextDataModule:
    dm = GroupedTextDataModule(tokenizer_path=str(tiny_bert_dir), **kwargs)
    dm.setup("fit")
    return dm


def test_stereoset_builtin_task(tiny_bert_dir):
    dm = make(tiny_bert_dir)
    assert len(dm.group_names) == 12 and dm.group_names[0] == "stereotype|gender"
    sizes = {split: len(ds) for split, ds in dm.datasets.items()}
    assert sum(sizes.values()) == 3 * 4229
    assert sizes["val"] == pytest.approx(0.1 * 3 * 4229, rel=0.02)
    # the three sentences of a context stay in one split: every split has as many examples per label
    for ds in dm.datasets.values():
        assert torch.bincount(ds.labels).unique().numel() == 1
    # every group is present in every split (stratified by bias type)
    for ds in dm.datasets.values():
        assert ds.groups.sum(dim=0).min() > 0


def test_split_is_seeded(tiny_bert_dir):
    first = make(tiny_bert_dir).datasets["test"].encodings["input_ids"][:20]
    again = make(tiny_bert_dir).datasets["test"].encodings["input_ids"][:20]
    other = make(tiny_bert_dir, split_seed=7).datasets["test"].encodings["input_ids"][:20]
    assert first == again and first != other


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_civilcomments_wilds_file_with_split_column(tiny_bert_dir, tmp_path, suffix):
    path = write(civilcomments_frame(), tmp_path / f"all_data_with_identities{suffix}")
    dm = make(tiny_bert_dir, dataset=str(path), group_scheme="civilcomments_wilds", num_labels=2, split_column="split")
    assert len(dm.group_names) == 16
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [72, 18, 18]


def test_multinli_separate_files(tiny_bert_dir, tmp_path):
    frame = multinli_frame()
    paths = [write(frame, tmp_path / f"{name}.jsonl") for name in ("train", "dev", "test")]
    dm = make(tiny_bert_dir, dataset=str(paths[0]), val_file=str(paths[1]), test_file=str(paths[2]),
              group_scheme="multinli", num_labels=3)
    assert len(dm.group_names) == 6 and len(dm.datasets["val"]) == len(frame)
    assert dm.tokenizer.decode(dm.datasets["train"].encodings["input_ids"][0]).count("[SEP]") == 2  # a text pair


def test_scotus_and_generic_columns(tiny_bert_dir, tmp_path):
    path = write(scotus_frame(rows_per_cell=12), tmp_path / "scotus.jsonl")
    assert len(make(tiny_bert_dir, dataset=str(path), group_scheme="scotus", num_labels=14).group_names) == 28
    generic = make(tiny_bert_dir, dataset=str(path), num_labels=14, group_columns=["decision_direction"])
    assert len(generic.group_names) == 28 and generic.group_names[0] == "0|0"


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_file_is_named(tiny_bert_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--data.dataset='.*nope.csv': no such file or directory"):
        GroupedTextDataModule(dataset=str(tmp_path / "nope.csv"), tokenizer_path=str(tiny_bert_dir))


def test_missing_column_is_named(tiny_bert_dir, tmp_path):
    path = write(scotus_frame(), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"d.csv: no column 'topic'; columns are"):
        make(tiny_bert_dir, dataset=str(path), num_labels=14, group_columns=["topic"])


def test_label_outside_num_labels_names_row(tiny_bert_dir, tmp_path):
    frame = scotus_frame()
    frame.loc[5, "label"] = 14
    path = write(frame, tmp_path / "d.csv")
    # 1-based row numbers, and the value as written (14, not np.int64(14))
    with pytest.raises(ValueError, match=r"d.csv: column 'label' row 6 \(1-based\) has label 14, outside num_labels=14"):
        make(tiny_bert_dir, dataset=str(path), num_labels=14, group_columns=["decision_direction"])


def test_nan_text_names_row(tiny_bert_dir, tmp_path):
    frame = multinli_frame()
    frame.loc[3, "sentence2"] = None
    path = write(frame, tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match=r"m.jsonl: column 'sentence2' row 4 \(1-based\) has no text"):
        make(tiny_bert_dir, dataset=str(path), group_scheme="multinli", num_labels=3)


def test_empty_group_is_refused(tiny_bert_dir, tmp_path):
    frame = civilcomments_frame()
    frame = frame[~((frame["toxicity"] > 0.5) & (frame["muslim"] > 0.5))]
    path = write(frame, tmp_path / "cc.csv")
    with pytest.raises(ValueError, match=r"\['toxic\|muslim'\] have no training rows"):
        make(tiny_bert_dir, dataset=str(path), group_scheme="civilcomments_wilds", num_labels=2, split_column="split")


def test_missing_group_value_names_row(tiny_bert_dir, tmp_path):
    frame = scotus_frame()
    frame["decision_direction"] = frame["decision_direction"].astype(object)
    frame.loc[7, "decision_direction"] = None
    path = write(frame, tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"group column 'decision_direction' row 8 \(1-based\) is empty"):
        make(tiny_bert_dir, dataset=str(path), num_labels=14, group_columns=["decision_direction"])


def test_unknown_scheme_and_label_mismatch():
    with pytest.raises(ValueError, match=r"group_scheme='civil' is unknown; choose one of \['civilcomments'"):
        GroupedTextDataModule(group_scheme="civil")
    with pytest.raises(ValueError, match=r"group_scheme='multinli' has 3 labels but --data.num_labels=2"):
        GroupedTextDataModule(group_scheme="multinli", num_labels=2)


def test_string_label_not_in_label_names(tiny_bert_dir, tmp_path):
    frame = multinli_frame()
    frame.loc[2, "gold_label"] = "-"
    path = write(frame, tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match=r"column 'gold_label' row 3 \(1-based\) has label '-', not one of"):
        make(tiny_bert_dir, dataset=str(path), group_scheme="multinli", num_labels=3)


# ----------------------------------------------------------------------------------------------- loaders
def test_eval_shards_cover_each_example_once(tiny_bert_dir):
    dataset = make(tiny_bert_dir).datasets["val"]
    seen = []
    for rank in range(3):
        for index in EvalShardSampler(dataset, num_replicas=3, rank=rank):
            item = dataset[index]
            if item["labels"] != IGNORE_INDEX:
                seen.append(index)
    assert sorted(seen) == list(range(len(dataset)))
    assert len({len(EvalShardSampler(dataset, 3, r)) for r in range(3)}) == 1  # equal lengths: lockstep


def test_eval_shards_by_length_go_longest_first_and_cover_each_example_once(tiny_bert_dir):
    dm = make(tiny_bert_dir)
    dataset, lengths = dm.datasets["val"], dm.token_lengths("val")
    shards = [list(EvalShardSampler(dataset, 2, rank, lengths=lengths)) for rank in range(2)]
    real = sorted(i for shard in shards for i in shard if i < len(dataset))
    assert real == list(range(len(dataset)))
    merged = [i for pair in zip(*shards) for i in pair if i < len(dataset)]
    assert [lengths[i] for i in merged] == sorted(lengths, reverse=True)
    assert len(set(lengths)) > 1  # the check above could not fail on equal lengths
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, EvalShardSampler) and loader.sampler.order == merged


@pytest.mark.parametrize("group_by_length", [False, True])
def test_train_shards_form_the_single_process_global_batch(tiny_bert_dir, group_by_length):
    dm = make(tiny_bert_dir, batch_size=8, group_by_length=group_by_length)

    class FakeTrainer:
        def __init__(self, world_size, global_rank):
            self.world_size, self.global_rank = world_size, global_rank

    def first_batches(world_size, rank, n=3):
        dm.trainer = FakeTrainer(world_size, rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [batch for _, batch in zip(range(n), loader)]

    single = first_batches(1, 0)
    shards = [first_batches(2, r) for r in range(2)]
    for step in range(3):
        merged = sorted(shards[0][step]["labels"].tolist() + shards[1][step]["labels"].tolist())
        assert merged == sorted(single[step]["labels"].tolist())
        ids_single = {tuple(x[x != 0].tolist()) for x in single[step]["input_ids"]}
        ids_ddp = {tuple(x[x != 0].tolist()) for s in shards for x in s[step]["input_ids"]}
        assert ids_single == ids_ddp
    dm.trainer = None


def test_global_batch_must_divide_by_world_size(tiny_bert_dir):
    dm = make(tiny_bert_dir, batch_size=9)
    dm.trainer = type("T", (), {"world_size": 2, "global_rank": 0})()
    with pytest.raises(ValueError, match="batch_size=9 is the global batch; it must divide by the 2 processes"):
        dm.train_dataloader()
    dm.trainer = None


def test_length_grouped_batches_pad_less_and_cover_each_example_once_per_epoch(tiny_bert_dir):
    plain, grouped = make(tiny_bert_dir, batch_size=16), make(tiny_bert_dir, batch_size=16, group_by_length=True)
    lengths = grouped.token_lengths("train")

    def epoch(dm, number):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(number)
        order = list(loader.sampler)
        padded = sum(batch["input_ids"].numel() for batch in loader)
        return order, padded

    order, padded = epoch(grouped, 0)
    plain_order, plain_padded = epoch(plain, 0)
    assert len(order) == len(set(order)) == len(plain_order)  # a permutation, the same drop_last tail
    assert padded < 0.8 * plain_padded  # the point of it
    assert sum(lengths[i] for i in order[:16]) > sum(lengths[i] for i in order[-16:])  # longest batch first
    assert epoch(grouped, 1)[0] != order  # a new order each epoch (seed + epoch)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_resumable_loader_continues_where_it_stopped(tiny_bert_dir, group_by_length):
    dm = make(tiny_bert_dir, batch_size=16, group_by_length=group_by_length)
    loader = dm.train_dataloader()
    loader.trained_batches = None  # outside a Trainer: count yielded batches
    loader.sampler.set_epoch(2)
    full = [batch["input_ids"] for batch in loader]
    partial = iter(loader)
    for _ in range(5):
        next(partial)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 5}

    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)
    rest = [batch["input_ids"] for batch in fresh]
    assert len(rest) == len(full) - 5
    assert all(torch.equal(a, b) for a, b in zip(rest, full[5:]))
    # a state from another epoch is ignored (the epoch had finished)
    fresh.load_state_dict({"epoch": 1, "batches_yielded": 5})
    assert len(list(fresh)) == len(full)


@pytest.mark.parametrize("name", ["civilcomments", "civilcomments_wilds", "multinli", "scotus"])
def test_shipped_data_overlays_work_on_real_column_formats(name, tiny_bert_dir, tmp_path):
    import yaml

    from tests.helpers import REPO

    init_args = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"]["init_args"]
    frame = {"civilcomments": civilcomments_frame, "civilcomments_wilds": civilcomments_frame,
             "multinli": multinli_frame, "scotus": lambda: scotus_frame(rows_per_cell=12)}[name]()
    for option in ("dataset", "val_file", "test_file"):
        if option in init_args:
            init_args[option] = str(write(frame, tmp_path / f"{option}{Path(init_args[option]).suffix}"))
    dm = make(tiny_bert_dir, **init_args)
    assert len(dm.group_names) == {"civilcomments": 4, "civilcomments_wilds": 16, "multinli": 6, "scotus": 28}[name]


# ------------------------------------------------------------------------------------- saved and hub datasets
def test_save_to_disk_dataset_with_named_splits(tiny_bert_dir, tmp_path):
    import datasets

    frame = scotus_frame(rows_per_cell=6)
    splits = {"train": frame.iloc[::2], "validation": frame.iloc[1::4], "test": frame.iloc[3::4]}
    datasets.DatasetDict({name: datasets.Dataset.from_pandas(part, preserve_index=False)
                          for name, part in splits.items()}).save_to_disk(tmp_path / "saved")
    dm = make(tiny_bert_dir, dataset=str(tmp_path / "saved"), num_labels=14, group_columns=["decision_direction"],
              dataset_splits={"train": "train", "val": "validation", "test": "test"})
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [len(p) for p in splits.values()]
    with pytest.raises(ValueError, match=r"holds splits \['test', 'train', 'validation'\]; name the one to read"):
        make(tiny_bert_dir, dataset=str(tmp_path / "saved"), num_labels=14, group_columns=["decision_direction"])


def test_uncached_hub_dataset_offline_fails_at_once_naming_it(tiny_bert_dir):
    import time

    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"--data.dataset='nobody-here/no-such-data': could not load the hub "
                                                r"dataset while offline"):
        make(tiny_bert_dir, dataset="nobody-here/no-such-data", num_labels=2, group_columns=["x"])
    assert time.perf_counter() - start < 30


def test_a_test_run_tokenizes_the_test_split_only(tiny_bert_dir, tmp_path):
    """Splits are tokenized when first read: ``lmshrink test`` reads only the test split (every check of the data
    ran before, on the whole table), and what it reads is what tokenizing every split at once gave."""
    from lmshrink.cli import main
    from tests.helpers import REPO

    cli = main(["test", "--config", str(REPO / "configs/teacher/stereoset_minilm.yaml"),
                f"--model.model_path={tiny_bert_dir}", f"--data.tokenizer_path={tiny_bert_dir}",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                "--model.export_dir=null", "--trainer.limit_test_batches=1"])
    assert list(cli.datamodule.datasets._built) == ["test"]
    every = make(tiny_bert_dir, max_length=cli.datamodule.hparams.max_length)
    eager = {split: every.datasets[split] for split in ("train", "val", "test")}
    assert list(every.datasets._built) == ["train", "val", "test"]
    assert eager["test"].encodings == cli.datamodule.datasets["test"].encodings
    assert torch.equal(eager["test"].labels, cli.datamodule.datasets["test"].labels)
