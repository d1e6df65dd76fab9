"""Pruning of causal LMs (Llama-type decoders such as SmolLM2).

- :mod:`blocks`: calibration streamed block by block; :mod:`oneshot`: the one entry point, with magnitude;
  :mod:`wanda` (Sun et al. 2024), :mod:`sparsegpt` (Frantar & Alistarh 2023).
- :mod:`structure`: key/value groups and MLP channels, their FLOPs, masks and slicing;
  :mod:`kprune`, :mod:`kwon`: structured K-prune and Kwon et al. extended to decoders;
  :mod:`sliced_decoder_modeling`: the class a sliced decoder directory loads with.
"""
