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


# Tests whose subject does not depend on the backend (argument validation,
# the benchmark report's logic, the claims machinery, subprocesses that pick
# their own backend) carry this marker and run in one backend's suite only:
# `make test` runs the two suites side by side, and this one is the shorter
# (the TensorFlow suite also checks the built site).
RUNS_ONCE_ON = "jax"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backend_independent: the test's subject is the same on every "
        f"backend; it runs in the {RUNS_ONCE_ON} suite only",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == RUNS_ONCE_ON:
        return
    once = [
        item for item in items if item.get_closest_marker("backend_independent")
    ]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [i for i in items if i not in once]
