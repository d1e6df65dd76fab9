"""Pruning, plain PyTorch (no Lightning): structured pruning of fine-tuned encoders (reference: shared
docs/pruning-spec.md) and one-shot pruning of causal LMs.

- :mod:`arch`, :mod:`sliced_modeling`: where the prunable parts of BERT/RoBERTa/DistilBERT live; the
  narrower model classes a pruned directory loads with.
- :mod:`flops`: the FLOPs model (spec §1.2) and keep-ratio budget (§1.3).
- :mod:`masks`, :mod:`capture`: head/neuron gates as pre-hooks on the output projections; reading sublayers.
- :mod:`sample`: the seeded, fixed-order pruning sample.
- :mod:`kprune` (K-prune, §3) and :mod:`kwon` (Kwon et al., §2), with :mod:`search` and :mod:`least_squares`.
- :mod:`magnitude`: global L1 unstructured and L1 head baselines.
- :mod:`slicing`: physical pruning (§6) and saving; :mod:`run`: one entry point and the pruning record.
- Causal LMs: :mod:`wanda` (Sun et al. 2024), :mod:`sparsegpt` (Frantar & Alistarh 2023), :mod:`sparsity_masks`
  (per-row and N:M masks), :mod:`decoder_blocks` (calibration streamed block by block), :mod:`decoder_oneshot`
  (one entry point, with magnitude).
"""
