from lmshrink.datamodules.grouped_text import GroupedTextDataModule

__all__ = ["GroupedTextDataModule"]
