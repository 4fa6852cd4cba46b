"""The shared layer-test harness, exercised on Keras built-in layers.

These tests show that each check in `harness.check_layer` passes for a
well-behaved layer and fails for a layer that breaks it.
"""

import keras
import numpy as np
import pytest

from .harness import check_config_round_trip, check_layer


def test_harness_passes_on_keras_layer_normalization(tmp_path):
    check_layer(
        keras.layers.LayerNormalization,
        {"axis": -1, "epsilon": 1e-3},
        (4, 3, 5),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


def test_harness_passes_on_keras_batch_normalization(tmp_path):
    check_layer(
        keras.layers.BatchNormalization,
        {"momentum": 0.9},
        (8, 4, 4, 3),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
    )


@keras.saving.register_keras_serializable(package="keraslayers_tests")
class _DriftingConfig(keras.layers.Layer):
    """Stores a transformed argument, so a config round trip changes it."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = 2 * scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}

    def call(self, x):
        return x * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keraslayers_tests")
class _Float16Weights(keras.layers.Layer):
    """Creates its weight in the compute dtype (float16 when mixed)."""

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1],),
            initializer="ones",
            dtype=self.compute_dtype,
        )

    def call(self, x):
        return x * self.w

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keraslayers_tests")
class _Frozen(keras.layers.Layer):
    """Has a trainable weight whose gradient is always zero."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x + 0.0 * self.w

    def compute_output_shape(self, input_shape):
        return input_shape


@pytest.mark.backend_independent
def test_harness_catches_a_config_that_does_not_round_trip():
    with pytest.raises(AssertionError, match="changed the config"):
        check_config_round_trip(_DriftingConfig(scale=3.0))


def test_harness_catches_float16_weights():
    with pytest.raises(AssertionError, match="under mixed_float16"):
        check_layer(_Float16Weights, {}, (2, 3), run_training_check=False)


def test_harness_catches_weights_that_do_not_train():
    with pytest.raises(AssertionError, match="left every trainable weight"):
        check_layer(_Frozen, {}, (2, 3), run_mixed_precision_check=False)


@pytest.mark.backend_independent
def test_harness_catches_a_wrong_weight_count():
    with pytest.raises(AssertionError, match="trainable weights"):
        check_layer(
            keras.layers.LayerNormalization,
            {},
            (2, 3),
            expected_num_trainable_weights=3,
        )


def test_backend_is_the_requested_one():
    import os

    requested = os.environ.get("KERAS_BACKEND", "tensorflow")
    assert keras.backend.backend() == requested
    assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.ones((2,)))).all()


class _OnlyInThisProcess(keras.layers.Layer):
    """Registered at test time only: a fresh process cannot load it."""

    def call(self, x):
        return 2.0 * x

    def compute_output_shape(self, input_shape):
        return input_shape


@pytest.mark.backend_independent
def test_harness_catches_a_model_that_loads_only_in_the_test_process(
    tmp_path,
):
    registered = keras.saving.register_keras_serializable(
        package="keraslayers_tests_local"
    )(_OnlyInThisProcess)
    with pytest.raises(AssertionError, match="a fresh process could not load"):
        check_layer(
            registered,
            {},
            (2, 3),
            run_training_check=False,
            run_mixed_precision_check=False,
            tmp_path=tmp_path,
            run_fresh_process_check=True,
        )
    # The loader starts again after a failure and loads what it can.
    (tmp_path / "again").mkdir()
    check_layer(
        keras.layers.LayerNormalization,
        {},
        (2, 3),
        run_training_check=False,
        run_mixed_precision_check=False,
        tmp_path=tmp_path / "again",
        run_fresh_process_check=True,
    )
