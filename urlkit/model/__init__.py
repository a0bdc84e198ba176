"""The reranker's model: backbones (text, GGUF, vision-language), heads, scoring, LoRA."""
