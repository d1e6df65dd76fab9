"""Structured pruning of fine-tuned encoders (BERT, RoBERTa, DistilBERT, MiniLM; spec §1-§7).

- :mod:`arch`, :mod:`sliced_modeling`: where the prunable parts live; the narrower classes a pruned directory
  loads with (shipped beside its weights as remote code).
- :mod:`gates`: head/neuron masks as pre-hooks; :mod:`layer_inputs`: start a forward at a layer.
- :mod:`kprune` (K-prune, §3), :mod:`kwon` (Kwon et al., §2), :mod:`magnitude` (L1 baselines).
- :mod:`slicing`: physical pruning (§6) and saving; :mod:`run`: one entry point and the pruning record.
"""
