"""Saving a quantized model and loading it back, for the schemes whose backend allows it.

The saved folder holds ``quantized_state_dict.pt`` and ``quantization.json`` (scheme, skipped modules, the
float model it came from). Loading rebuilds the float model, quantizes it with the same scheme and then
loads the saved quantized tensors, so no float weights are needed beyond the architecture.
bitsandbytes 4-bit states (``absmax``/``quant_map`` entries) do not load back into a re-quantized layer
in bitsandbytes 0.50, so NF4/FP4 models are refused rather than saved in a form that cannot be reloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmshrink.paths import refuse_non_empty
from lmshrink.quantize.apply import apply
from lmshrink.quantize.schemes import SCHEMES

STATE_FILE = "quantized_state_dict.pt"
MANIFEST_FILE = "quantization.json"
NOT_RELOADABLE = {"bnb-nf4": "bitsandbytes 4-bit states do not reload into Linear4bit on CPU (0.50)",
                  "bnb-fp4": "bitsandbytes 4-bit states do not reload into Linear4bit on CPU (0.50)"}


def save_quantized(model: nn.Module, scheme: str, skip_modules: list[str], directory: str | Path, source: str,
                   embeddings: str = "float") -> Path:
    """Write the quantized state dict and its manifest; refuses a non-empty directory (no overwrite)."""
    if scheme in NOT_RELOADABLE:
        raise NotImplementedError(f"scheme={scheme!r} cannot be saved for reloading: {NOT_RELOADABLE[scheme]}")
    refuse_non_empty(directory, "save_dir")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / STATE_FILE)
    manifest = {"scheme": scheme, "skip_modules": skip_modules, "source_model": source, "embeddings": embeddings}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return directory


def load_quantized(float_model: nn.Module, directory: str | Path) -> nn.Module:
    """Quantize ``float_model`` (same architecture, any weights) as recorded, then load the saved tensors."""
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    scheme = manifest["scheme"]
    apply(float_model, scheme, embeddings=manifest.get("embeddings", "float"), skip=manifest["skip_modules"])
    state = torch.load(directory / STATE_FILE, map_location=next(float_model.parameters()).device, weights_only=False)
    # torchao weights are tensor subclasses: they replace the parameters instead of being copied into them
    missing, unexpected = float_model.load_state_dict(state, strict=False, assign=SCHEMES[scheme].backend == "torchao")
    if missing or unexpected:
        raise ValueError(f"{directory}: the saved state does not match the model quantized as recorded (missing "
                         f"{sorted(missing)}, unexpected {unexpected})")
    return float_model
