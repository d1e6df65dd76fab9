from lmshrink.datamodules.audit_prompts import AuditPromptsDataModule
from lmshrink.datamodules.grouped_text import GroupedTextDataModule

__all__ = ["AuditPromptsDataModule", "GroupedTextDataModule"]
