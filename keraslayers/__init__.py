"""keraslayers: normalization layers for Keras 3.

The layers are written with `keras.ops` only, so they run on every Keras
backend; the project tests them on TensorFlow and JAX.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
