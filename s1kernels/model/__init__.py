"""Compact Qwen2/Llama decoder with packed (varlen) training and static-cache generation."""
from .checkpoint import load_model, save_model
from .config import ModelConfig
from .transformer import KVCache, Transformer

__all__ = ["ModelConfig", "Transformer", "KVCache", "load_model", "save_model"]
