"""Data plumbing without Lightning: reading tables, group definitions, splits, loaders."""
