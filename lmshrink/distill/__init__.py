"""Knowledge distillation in plain PyTorch: losses, layer maps, student construction (no Lightning)."""
