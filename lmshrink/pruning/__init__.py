"""Structured pruning of encoders, plain PyTorch (no Lightning); reference: shared docs/pruning-spec.md.

So far: architecture adapters (:mod:`arch`), the FLOPs model and keep-ratio budget (:mod:`flops`, spec
§1.2-1.3) and head/neuron masks as forward pre-hooks on the output projections (:mod:`masks`, spec §1.1).
K-prune, Kwon et al., physical slicing and the magnitude baselines are not implemented yet.
"""
