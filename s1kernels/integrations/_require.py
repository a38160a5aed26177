"""One clear error when transformers, which these integrations plug into, is missing."""
import importlib


def require_transformers():
    try:
        return importlib.import_module("transformers")
    except ImportError as e:
        raise ImportError("s1kernels.integrations.transformers needs transformers: "
                          "pip install 's1kernels[hf]' (or pip install transformers)") from e
