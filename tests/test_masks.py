"""Masks: the batch-statistics layers compute their statistics over the
unmasked positions only and pass the mask on, with the semantics of
Keras's BatchNormalization."""

import keras
import numpy as np
import pytest

import keraslayers as kl

LAYERS = {
    "BRN": lambda: kl.BatchRenormalization(momentum=0.5),
    "BKN": lambda: kl.BatchKalmanNormalization(momentum=0.5),
    "DBN": lambda: kl.DecorrelatedBatchNormalization(
        group_size=2, momentum=0.5
    ),
    "IterNorm": lambda: kl.IterativeNormalization(group_size=2, momentum=0.5),
}
STATISTICS = {
    "BRN": ("moving_mean", "moving_stddev"),
    "BKN": ("moving_mean", "moving_variance"),
    "DBN": ("moving_mean", "moving_whitening"),
    "IterNorm": ("moving_mean", "moving_whitening"),
}


def _padded_batch():
    """Sequences of lengths 5, 3, 1, 4 padded with zeros to 6 steps."""
    rng = np.random.default_rng(0)
    lengths = [5, 3, 1, 4]
    x = np.zeros((4, 6, 4), "float32")
    mask = np.zeros((4, 6), bool)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(1.5, 2.0, size=(n, 4))
        mask[i, :n] = True
    return x, mask


@pytest.mark.parametrize("name", list(LAYERS))
def test_statistics_come_from_the_unmasked_positions_only(name):
    x, mask = _padded_batch()
    masked, valid_only = LAYERS[name](), LAYERS[name]()
    out = keras.ops.convert_to_numpy(masked(x, training=True, mask=mask))
    # The same layer on the valid rows alone, as one flat batch.
    ref = keras.ops.convert_to_numpy(valid_only(x[mask], training=True))
    np.testing.assert_allclose(out[mask], ref, rtol=1e-4, atol=1e-4)
    for statistic in STATISTICS[name]:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(getattr(masked, statistic)),
            keras.ops.convert_to_numpy(getattr(valid_only, statistic)),
            rtol=1e-5,
            atol=1e-5,
        )


def test_brn_matches_keras_batch_normalization_under_a_mask():
    x, mask = _padded_batch()
    brn = kl.BatchRenormalization(momentum=0.5, r_max=1.0, d_max=0.0)
    bn = keras.layers.BatchNormalization(momentum=0.5, epsilon=brn.epsilon)
    out = keras.ops.convert_to_numpy(brn(x, training=True, mask=mask))
    expected = keras.ops.convert_to_numpy(bn(x, training=True, mask=mask))
    np.testing.assert_allclose(out[mask], expected[mask], atol=1e-4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(brn.moving_mean),
        keras.ops.convert_to_numpy(bn.moving_mean),
        atol=1e-5,
    )


def _check_an_lstm_after_it_ignores_padding(make_layer):
    """An LSTM after the layer skips the padded steps only if the mask
    reaches it: then more padding changes nothing, after training too."""
    x, mask = _padded_batch()
    inputs = keras.Input((None, 4))
    h = keras.layers.Masking(0.0)(inputs)
    h = make_layer()(h)
    model = keras.Model(inputs, keras.layers.LSTM(3)(h))
    assert model.layers[2].supports_masking
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((4, 3), "float32"), epochs=2, verbose=0)
    longer = np.concatenate([x, np.zeros((4, 3, 4), "float32")], axis=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(longer, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_the_mask_is_passed_on_in_a_model(name):
    """An LSTM after the layer skips the padded steps only if the mask
    reaches it: then more padding changes nothing."""
    _check_an_lstm_after_it_ignores_padding(LAYERS[name])


# The layers that transform each position on its own pass the mask on, as
# Keras's Dense does; FRN's ν² is the mean over a sample's unmasked steps.
PASS_THROUGH = {
    "WeightNormDense": lambda: kl.WeightNormDense(4),
    "WeightNormDense data_init": lambda: kl.WeightNormDense(4, data_init=True),
    "CenteredWeightNormDense": lambda: kl.CenteredWeightNormDense(4),
    "WeightStandardizedDense": lambda: kl.WeightStandardizedDense(4),
    "OrthogonalDense": lambda: kl.OrthogonalDense(4),
    "TLU": lambda: kl.TLU(),
    "FRN": lambda: kl.FilterResponseNormalization(),
}


@pytest.mark.parametrize("name", list(PASS_THROUGH))
def test_a_per_position_layer_passes_the_mask_on(name):
    _check_an_lstm_after_it_ignores_padding(PASS_THROUGH[name])


def test_frn_normalizes_each_sample_over_its_unmasked_steps():
    x, mask = _padded_batch()
    layer = kl.FilterResponseNormalization(epsilon=1e-3)
    out = keras.ops.convert_to_numpy(layer(x, mask=mask))
    for i, n in enumerate(mask.sum(1)):
        valid = x[i, :n].astype("float64")
        nu2 = (valid**2).mean(0)
        expected = valid / np.sqrt(nu2 + 1e-3)
        np.testing.assert_allclose(out[i, :n], expected, rtol=1e-5, atol=1e-6)


def test_weight_norm_data_init_uses_the_unmasked_positions_only():
    x, mask = _padded_batch()
    masked = kl.WeightNormDense(3, data_init=True)
    valid_only = kl.WeightNormDense(3, data_init=True)
    masked.build((None, None, 4))
    valid_only.build((None, 4))
    valid_only.set_weights(masked.get_weights())
    out = keras.ops.convert_to_numpy(masked(x, training=True, mask=mask))
    # Standardized pre-activations over the valid rows: mean 0, variance 1.
    ref = keras.ops.convert_to_numpy(valid_only(x[mask], training=True))
    np.testing.assert_allclose(out[mask], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(ref.var(0), 1.0, rtol=1e-3)
