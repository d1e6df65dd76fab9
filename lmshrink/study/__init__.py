"""The "who pays?" study: one YAML runs teacher -> distill -> prune -> quantize stages over seeds, resumably, and
reports every model per subgroup (:mod:`spec`, :mod:`runner`, :mod:`measure`, :mod:`report`).

    python -m lmshrink.study configs/study/stereoset_minilm.yaml
"""
