"""Test configuration: the Keras backend is chosen by KERAS_BACKEND.

The Makefile runs the suite once per backend (TensorFlow, then JAX); the
header of each run names the backend so the log shows both.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ.get("KERAS_BACKEND") == "jax":
    # The float64 gradient checks need 64-bit arrays; the layers' own math
    # stays float32 unless a layer is built with dtype="float64".
    import jax

    jax.config.update("jax_enable_x64", True)

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    import keraslayers

    return (
        f"keras {keras.__version__}, backend: {keras.backend.backend()}, "
        f"keraslayers {keraslayers.__version__}"
    )


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with the float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
