"""Structured pruning of encoders, plain PyTorch (no Lightning); reference: shared docs/pruning-spec.md.

So far: architecture adapters (:mod:`arch`), the FLOPs model and keep-ratio budget (:mod:`flops`, spec
§1.2-1.3), head/neuron masks as forward pre-hooks on the output projections (:mod:`masks`, spec §1.1) and
the magnitude baselines (:mod:`magnitude`). K-prune, Kwon et al., physical slicing and the Lightning
module are not implemented yet.
"""
