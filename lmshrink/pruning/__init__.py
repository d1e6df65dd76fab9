"""Pruning, plain PyTorch (no Lightning), in two rooms over a shared core.

- :mod:`encoder`: structured pruning of fine-tuned encoders (reference: shared docs/pruning-spec.md): K-prune,
  Kwon et al., the magnitude baselines, physical slicing and the model classes a pruned directory loads with.
- :mod:`decoder`: causal LMs: one-shot Wanda / SparseGPT / magnitude (unstructured or N:M) and structured
  K-prune / Kwon et al. of key/value groups and MLP channels.
- The core both rooms share: :mod:`flops` (the FLOPs model, spec §1.2, and keep-ratio budget, §1.3),
  :mod:`settings` (K-prune's and Kwon et al.'s settings), :mod:`search` (threshold and exact head/neuron search,
  mask rearrangement), :mod:`least_squares` (the solves), :mod:`capture` (reading a sublayer's input and output),
  :mod:`masks` (gates as pre-hooks), :mod:`linear_slicing` (cutting a Linear to what was kept),
  :mod:`sparsity_masks` (per-row and N:M masks).

The seeded, fixed-order pruning sample is drawn by :mod:`lmshrink.data.pruning_sample`.
"""
