from lmshrink.datamodules.audit_prompts import AuditPromptsDataModule
from lmshrink.datamodules.grouped_text import GroupedTextDataModule
from lmshrink.datamodules.token_tagging import TokenTaggingDataModule

__all__ = ["AuditPromptsDataModule", "GroupedTextDataModule", "TokenTaggingDataModule"]
