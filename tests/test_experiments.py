"""The book's experiment layer (normbook): models by name, the one Trainer
with its two engines, a grid over seeds. On both backends."""

import keras
import numpy as np
import pytest

import keraslayers
import normbook as nb


def _data(n=96, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, :classes].argmax(1)).astype("int32")
    return x, y, x[:32], y[:32]


@pytest.mark.parametrize("kind", nb.KINDS)
def test_every_kind_builds_a_model_that_runs(kind):
    model = nb.mlp(kind, inputs=12, units=8, depth=2, classes=3, total_steps=80)
    out = model(np.zeros((4, 12), "float32"), training=True)
    assert tuple(out.shape) == (4, 3)
    norms = [
        layer
        for layer in model.layers
        if not isinstance(
            layer,
            (keras.layers.Dense, keras.layers.ReLU, keras.layers.InputLayer),
        )
    ]
    assert len(norms) == (0 if kind == "none" else 2)


def test_the_names_give_the_layers_the_text_names():
    assert isinstance(nb.normalizer("BN"), keras.layers.BatchNormalization)
    assert nb.normalizer("IN").groups == -1
    assert nb.normalizer("GN", groups=4).groups == 4
    brn = nb.normalizer("BRN", total_steps=800, momentum=0.9)
    assert isinstance(brn, keraslayers.BatchRenormalization)
    assert brn.momentum == 0.9
    assert nb.normalizer("FRN, learned epsilon").learned_epsilon
    # Each layer's own epsilon unless one is given.
    assert nb.normalizer("BKN").epsilon == 1e-5
    assert nb.normalizer("BN").epsilon == 1e-3
    assert nb.normalizer("BKN", epsilon=1e-3).epsilon == 1e-3


def test_a_bias_only_where_no_normalizer_follows():
    def biases(model):
        return [
            layer.use_bias
            for layer in model.layers[:-1]
            if isinstance(layer, keras.layers.Dense)
        ]

    assert biases(nb.mlp("BN", inputs=4, depth=2)) == [False, False]
    assert biases(nb.mlp(None, inputs=4, depth=2)) == [True, True]
    assert biases(nb.mlp("none", inputs=4, depth=2)) == [True, True]
    assert biases(nb.mlp("none", inputs=4, depth=2, use_bias=False)) == [
        False,
        False,
    ]


def test_placement_puts_the_normalizer_before_or_after_the_activation():
    before = nb.mlp("LN", inputs=4, depth=1)
    after = nb.mlp("LN", inputs=4, depth=1, placement="after")
    kinds = [type(layer).__name__ for layer in before.layers]
    assert kinds[:3] == ["Dense", "LayerNormalization", "ReLU"]
    kinds = [type(layer).__name__ for layer in after.layers]
    assert kinds[:3] == ["Dense", "ReLU", "LayerNormalization"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nb.normalizer("batchnorm"), "kind='batchnorm'"),
        (lambda: nb.normalizer("BRN"), "total_steps"),
        (lambda: nb.activation("gelu"), "kind='gelu'"),
        (lambda: nb.mlp("BN", inputs=4, placement="middle"), "placement"),
        (lambda: nb.convnet("BN", strides=(1, 2)), "strides"),
        (
            lambda: nb.Trainer(lambda: nb.mlp(inputs=4), optimizer="lbfgs"),
            "optimizer='lbfgs'",
        ),
    ],
)
def test_a_wrong_name_is_refused_with_the_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_many_trains_as_keras_does_batch_after_batch():
    """One run of ``Trainer.many`` equals Keras's own train_on_batch over
    the same mini-batches (the order the run's seed draws), BN's moving
    statistics included."""
    x, y, _, _ = _data()
    batch, epochs, seed, rate = 16, 2, 3, 0.05

    def build():
        return nb.mlp("BN", inputs=12, units=8, depth=2, classes=3)

    def optimizer():
        return keras.optimizers.SGD(0.1, momentum=0.9)

    trainer = nb.Trainer(build, optimizer=optimizer(), metrics=())
    losses = trainer.many(x, y, [(seed, rate)], epochs=epochs, batch_size=batch)

    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.SGD(rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(seed)
    steps = len(y) // batch
    expected = []
    for _ in range(epochs):
        order = rng.permutation(len(y))[: steps * batch].reshape(steps, batch)
        expected.append(
            np.mean([float(model.train_on_batch(x[b], y[b])) for b in order])
        )
    np.testing.assert_allclose(losses[0], expected, rtol=2e-5)
    trained = trainer.load(0)
    for ours, theirs in zip(trained.weights, model.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours),
            keras.ops.convert_to_numpy(theirs),
            rtol=1e-4,
            atol=1e-5,
        )
    predictions = trainer.predict_many(x[:5])
    np.testing.assert_allclose(
        predictions[0],
        keras.ops.convert_to_numpy(model(x[:5], training=False)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_many_runs_are_independent_of_their_neighbours():
    """A run's result does not depend on which other runs share the call."""
    x, y, _, _ = _data()
    trainer = nb.Trainer(
        lambda: nb.mlp("BN", inputs=12, units=8, depth=1, classes=3),
        optimizer=keras.optimizers.SGD(0.1),
        metrics=(),
    )
    alone = trainer.many(x, y, [(1, 0.1)], epochs=2, batch_size=16)
    together = trainer.many(
        x, y, [(0, 0.01), (1, 0.1), (2, 0.3)], epochs=2, batch_size=16
    )
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_grid_gives_every_configuration_every_seed():
    data = _data()
    results = nb.grid(
        {
            kind: (
                lambda kind=kind: nb.mlp(kind, inputs=12, units=8, classes=3)
            )
            for kind in ("BN", "LN")
        },
        data,
        seeds=(0, 1, 2),
        learning_rate=0.05,
        epochs=2,
        batch_size=16,
    )
    assert list(results) == ["BN", "LN"]
    for runs in results.values():
        assert len(runs) == 3
        assert runs.final("val_accuracy").shape == (3,)
        assert runs.curves("loss").shape == (3, 2)
        assert "[" in runs.spread("val_accuracy")
    # Different seeds, different starts: the runs are not copies.
    assert len(set(results["BN"].final("loss"))) == 3


def test_the_same_seed_in_the_same_order_repeats_a_grid():
    data = _data()

    def run():
        return nb.grid(
            {
                "GN": lambda: nb.mlp(
                    "GN", inputs=12, units=8, classes=3, groups=2
                )
            },
            data,
            seeds=(0, 1),
            learning_rate=0.05,
            epochs=2,
            batch_size=16,
        )["GN"].final("loss")

    np.testing.assert_array_equal(run(), run())


class _LastBatchMean(keras.callbacks.Callback):
    """BN's moving mean at every epoch's end: with momentum 0, the mean of
    the epoch's last batch."""

    def __init__(self):
        super().__init__()
        self.means = []

    def on_epoch_end(self, epoch, logs=None):
        nb.sync_weights(self.model)
        bn = self.model.layers[0]
        self.means.append(keras.ops.convert_to_numpy(bn.moving_mean).copy())


def test_fit_runs_reshuffle_the_batches_every_epoch():
    """On both backends a run sees new batches every epoch (TensorFlow's
    array adapter alone would replay one order once a global seed is set)."""
    x, y, x_test, y_test = _data(n=64)

    def build():
        return keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.BatchNormalization(
                    momentum=0.0, center=False, scale=False
                ),
                keras.layers.Dense(3),
            ]
        )

    trainer = nb.Trainer(build, metrics=())
    record = _LastBatchMean()
    trainer.run(
        (x, y, x_test, y_test),
        seed=0,
        learning_rate=0.0,
        epochs=4,
        batch_size=8,
        callbacks=[record],
    )
    means = np.array(record.means)
    assert len(means) == 4
    # Each epoch ends on another batch: no two epochs' last means agree.
    for i in range(4):
        for j in range(i):
            assert not np.allclose(means[i], means[j])
