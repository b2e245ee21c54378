"""dslc: one .dl spec, three backends (Keras, PyTorch, ONNX), the same numbers."""

__version__ = "0.1.0"
