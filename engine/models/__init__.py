"""Local models: resolving `train.model` specs, GGUF import, training, fusing and GGUF export."""
