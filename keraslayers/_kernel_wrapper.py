"""Private base of the wrappers that reparameterize the kernel of any Keras
layer with one (Dense, EinsumDense, convolutions of every kind).

Why a `keras.layers.Wrapper` that swaps an attribute. The wrapped layer
keeps its own variables: its kernel variable holds the unconstrained V (the
stored parameter, with the layer's initializer, regularizer and
constraint) and its bias stays its bias; the wrapper adds the family's
gains or scales. At every call the wrapper computes the effective kernel W
from V (as a tensor, differentiable in V) and, for the duration of the
wrapped layer's call only, points the layer's kernel attribute (`_kernel`
behind Dense's, EinsumDense's and Conv's `kernel` property, `kernel` of the
transposed and depthwise convolutions, `depthwise_kernel` of the separable
ones) at that tensor, then restores the variable. The wrapped layer's own
`call` thus runs unchanged on W: no layer code is copied.

TF Addons' `WeightNormalization` assigned W to the kernel variable instead.
That cannot work here: inside JAX's stateless calls (every compiled `fit`
step, `stateless_call`) an assignment is recorded, not read back by the
layer's own computation through a differentiable path, so no gradient
would reach V. A Python attribute swapped at trace time is a plain tensor
in the traced graph on every backend (TensorFlow graphs and XLA, `jax.jit`),
so the gradient flows W → V as for any other op. Reading V itself goes
through Keras's variable mechanism (`variable.value`), which returns the
value a stateless scope maps to it, so `stateless_call` with other values
of V computes with those values.

The kernel's output units. The family math works on the (units, fan_in)
matrix view of the kernel (one row per output unit). Which kernel axes
index output units depends on the layer:

- Dense (fan_in, units), Conv1D/2D/3D (..., in / groups, filters): the last.
- Conv1DTranspose/2DTranspose/3DTranspose (..., filters, in): the second to
  last (Keras stores transposed kernels as (..., out, in)).
- DepthwiseConv1D/2D and the depthwise kernel of SeparableConv1D/2D
  (..., in, multiplier): the last two, each (input channel, multiplier)
  pair being one output channel (in · multiplier units, fan-in the kernel
  window), in the order of the layer's output channels.
- EinsumDense: the kernel axes whose letters appear in the output spec,
  taken in the output's order; the fan-in axes are the kernel letters that
  appear in the input spec only (Keras's own rule for the kernel
  initializer's fan-in and fan-out). An equation whose kernel repeats a
  letter, has a letter in neither the input nor the output, or has no
  output or no fan-in axis is refused, as ambiguous.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from typing import Any

import keras
from keras import ops

from keraslayers import _utils
from keraslayers._kernel_layers import columnwise_kernel

_SUPPORTED = (
    "Dense, EinsumDense, Conv1D/2D/3D, Conv1DTranspose/2DTranspose/"
    "3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D (its depthwise "
    "kernel)"
)


def _kind(layer) -> str | None:
    layers = keras.layers
    if isinstance(
        layer,
        (
            layers.Conv1DTranspose,
            layers.Conv2DTranspose,
            layers.Conv3DTranspose,
        ),
    ):
        return "transposed"
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return "depthwise"
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        return "separable"
    if isinstance(layer, layers.EinsumDense):
        return "einsum"
    if isinstance(
        layer, (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D)
    ):
        return "last"
    return None


def _describe(layer) -> str:
    if isinstance(layer, keras.layers.EinsumDense):
        return (
            f"<EinsumDense name={layer.name}, equation={layer.equation!r}, "
            f"bias_axes={layer.bias_axes!r}>"
        )
    if isinstance(layer, keras.layers.Layer):
        return f"<{type(layer).__name__} name={layer.name}>"
    return repr(layer)


def read_uncast(variable):
    """The value of `variable` in its own dtype (float32 under
    mixed_float16).

    The wrapped layer created its kernel and bias with Keras's default
    `autocast=True`, so reading them inside a mixed_float16 call would give
    float16; the reparameterization's math runs in float32. Keras has no
    public switch for a single read: `AutocastScope(None)` is the scope
    `Layer.__call__` itself enters for a layer built with `autocast=False`.
    """
    from keras.src.backend import AutocastScope

    with AutocastScope(None):
        return variable.value


@contextlib.contextmanager
def _substituted(layer, values: dict[str, Any]):
    """Points attributes of `layer` at `values` inside the block.

    `object.__setattr__` bypasses Keras's attribute tracking: the tensors
    are not variables to track, and the variables come back untouched (in
    the same tracked attribute) when the block ends, even on an error.
    """
    saved = {name: vars(layer)[name] for name in values}
    try:
        for name, value in values.items():
            object.__setattr__(layer, name, value)
        yield
    finally:
        for name, value in saved.items():
            object.__setattr__(layer, name, value)


class _Einsum:
    """EinsumDense's equation split into the kernel's unit and fan-in
    letters (see the module docstring)."""

    def __init__(self, wrapper, layer):
        def fail(reason):
            return ValueError(
                f"{type(wrapper).__name__}: {reason} Received: "
                f"layer={_describe(layer)}"
            )

        equation = str(layer.equation).replace(" ", "")
        match = re.fullmatch(
            r"([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)", equation
        )
        if match is None:
            raise fail(
                "cannot read the EinsumDense equation as "
                "'input,kernel->output' with a kernel spec of letters."
            )
        inputs, kernel, output = match.groups()
        if "..." in output.strip(".") or output.count(".") not in (0, 3):
            raise fail("the output spec may have '...' only at one end.")
        self.left_elided = output.startswith("...")
        self.output = output.replace(".", "")
        input_letters = inputs.replace(".", "")
        if len(set(kernel)) != len(kernel):
            raise fail(
                "the kernel spec repeats a letter (a diagonal), so its "
                "output units are ambiguous."
            )
        stray = [c for c in kernel if c not in self.output + input_letters]
        if stray:
            raise fail(
                f"kernel letter(s) {''.join(stray)!r} appear in neither the "
                "input nor the output, so the units they belong to are "
                "ambiguous."
            )
        self.units = [c for c in self.output if c in kernel]
        self.fan_in = [c for c in kernel if c not in self.output]
        if not self.units or not self.fan_in:
            raise fail(
                "the kernel needs at least one output axis (a letter in the "
                "output spec) and one fan-in axis (a letter of the input "
                "spec only), for its (units, fan-in) view."
            )
        self.kernel = kernel
        self.unit_axes = [kernel.index(c) for c in self.units]
        self.fan_in_axes = [kernel.index(c) for c in self.fan_in]

    def output_axes(self, rank: int) -> list[int]:
        offset = rank - len(self.output) if self.left_elided else 0
        return [offset + self.output.index(c) for c in self.units]


class KernelWrapper(keras.layers.Wrapper):
    """Base of the wrappers: the wrapped layer's kernel variable is V, the
    family mixin maps its (units, fan_in) view to W, `call` runs the
    wrapped layer with W in place of its kernel.

    A `keras.layers.Wrapper` rather than a plain Layer: the wrapped layer is
    a tracked sublayer, its variables are saved under it, and the config
    holds it serialized, as Keras's own wrappers (`TimeDistributed`,
    `SpectralNormalization`) do.
    """

    def __init__(self, layer, **kwargs):
        name = type(self).__name__
        kind = _kind(layer) if isinstance(layer, keras.layers.Layer) else None
        if kind is None:
            raise ValueError(
                f"{name}: `layer` must be a Keras layer with a kernel: "
                f"{_SUPPORTED}. Received: layer={_describe(layer)}"
            )
        self._check_plain(layer, name)
        einsum = _Einsum(self, layer) if kind == "einsum" else None
        # The wrapper computes in the wrapped layer's dtype unless told.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self._kind = kind
        self._einsum = einsum
        _utils.check_layer_dtype(self)
        # Inputs reach the wrapped layer uncast (it casts them itself); WN's
        # data-dependent initialization reads them in float32.
        self.autocast = False
        # A mask passes through as it does through the wrapped layer.
        self.supports_masking = layer.supports_masking

    @staticmethod
    def _check_plain(layer, name):
        """LoRA and quantization replace the kernel the layer computes
        with; the reparameterization is defined on a float kernel."""
        lora = getattr(layer, "lora_rank", None) or getattr(
            layer, "lora_enabled", False
        )
        quantized = getattr(layer, "quantization_mode", None)
        if lora or quantized:
            raise ValueError(
                f"{name}: `layer` must have a plain float kernel, without "
                f"LoRA or quantization. Received: layer={_describe(layer)} "
                f"(lora_rank={getattr(layer, 'lora_rank', None)}, "
                f"quantization_mode={quantized})"
            )

    # -- what the family mixins use -----------------------------------------
    @property
    def _kernel_variable(self):
        """V: the wrapped layer's kernel variable. Read from the layer, not
        kept here, so that the wrapper does not track it as its own."""
        return vars(self.layer)[self._kernel_attribute]

    @property
    def use_bias(self) -> bool:
        """Whether the wrapped layer adds a bias."""
        if self._kind == "einsum":
            return self.layer.bias_axes is not None
        return bool(getattr(self.layer, "use_bias", True))

    @property
    def bias(self):
        """The wrapped layer's bias variable (None without bias)."""
        return self.layer.bias

    def _math(self, x):
        return _utils.cast_for_math(self, x)

    def _v_matrix(self):
        v = self._math(read_uncast(self._kernel_variable))
        return ops.reshape(
            ops.transpose(v, self._perm), (self._units, self._fan_in)
        )

    def _from_matrix(self, w):
        w = ops.reshape(w, self._permuted_shape)
        return ops.transpose(w, self._inverse_perm)

    def _bias_value(self):
        return ops.reshape(self._math(read_uncast(self.layer.bias)), (-1,))

    def _unit_outputs(self, inputs, u):
        bias = self.layer.bias
        values = {
            self._kernel_attribute: self._from_matrix(u),
            "activation": None,
        }
        if bias is not None:
            values["bias"] = ops.zeros(bias.shape, dtype=u.dtype)
        with _substituted(self.layer, values):
            t = self.layer.call(self._math(inputs))
        rank = len(t.shape)
        if self._einsum is not None:
            unit_axes = self._einsum.output_axes(rank)
        elif getattr(self.layer, "data_format", None) == "channels_first":
            unit_axes = [1]
        else:
            unit_axes = [rank - 1]
        others = [i for i in range(rank) if i not in unit_axes]
        t = ops.transpose(t, others + unit_axes)
        return ops.reshape(t, (-1, self._units))

    def _check_data_init_supported(self) -> None:
        """WN's data init standardizes each output unit's pre-activation,
        which must be an output channel the bias shifts."""
        name = type(self).__name__
        if self._kind == "separable":
            raise ValueError(
                f"{name}: data_init standardizes the output of each unit of "
                "the reparameterized kernel, but a separable convolution's "
                "pointwise kernel mixes its depthwise units before the "
                "output. Received: "
                f"layer={_describe(self.layer)}, data_init=True"
            )
        if self._einsum is not None and self.use_bias:
            bias_axes = str(self.layer.bias_axes)
            if sorted(bias_axes) != sorted(self._einsum.units):
                raise ValueError(
                    f"{name}: data_init sets one bias per output unit, so "
                    "EinsumDense's `bias_axes` must be exactly the kernel's "
                    f"output axes {''.join(self._einsum.units)!r}. Received: "
                    f"layer={_describe(self.layer)}, data_init=True"
                )

    # -- Layer API ----------------------------------------------------------
    def build(self, input_shape=None):
        super().build(input_shape)
        self._check_plain(self.layer, type(self).__name__)
        names = (
            ("depthwise_kernel",)
            if self._kind == "separable"
            else ("_kernel", "kernel", "depthwise_kernel")
        )
        attribute = next(
            (
                n
                for n in names
                if isinstance(vars(self.layer).get(n), keras.Variable)
            ),
            None,
        )
        if attribute is None:
            raise ValueError(
                f"{type(self).__name__}: found no kernel variable in the "
                f"wrapped layer (looked for {names}). Received: "
                f"layer={_describe(self.layer)}"
            )
        self._kernel_attribute = attribute
        shape = tuple(self._kernel_variable.shape)
        rank = len(shape)
        if self._einsum is not None:
            unit_axes = self._einsum.unit_axes
        elif self._kind == "last":
            unit_axes = [rank - 1]
        elif self._kind == "transposed":
            unit_axes = [rank - 2]
        else:  # depthwise kernel: (..., in, multiplier)
            unit_axes = [rank - 2, rank - 1]
        fan_in_axes = [i for i in range(rank) if i not in unit_axes]
        self._perm = tuple(unit_axes + fan_in_axes)
        columns = tuple(fan_in_axes + unit_axes)
        self._column_perm = None if columns == tuple(range(rank)) else columns
        self._inverse_column_perm = tuple(columns.index(i) for i in range(rank))
        self._inverse_perm = tuple(self._perm.index(i) for i in range(rank))
        self._permuted_shape = tuple(shape[i] for i in self._perm)
        self._units = math.prod(shape[i] for i in unit_axes)
        self._fan_in = math.prod(shape[i] for i in fan_in_axes)
        self._build_reparameterization(self._units, self._fan_in)
        self.built = True

    @property
    def kernel(self):
        """The effective kernel W, in the wrapped layer's kernel layout."""
        if not self.built:
            raise AttributeError(
                f"{type(self).__name__}: build the layer before reading "
                "`kernel`."
            )
        if getattr(self, "_columnwise", False):
            return columnwise_kernel(
                self._reparameterize,
                self._math(read_uncast(self._kernel_variable)),
                self._fan_in,
                self._column_perm,
                self._inverse_column_perm,
            )
        return self._from_matrix(self._reparameterize(self._v_matrix()))

    def _substitutions(self) -> dict[str, Any]:
        """The wrapped layer's attributes to replace during its call."""
        kernel = ops.cast(self.kernel, self.layer.compute_dtype)
        return {self._kernel_attribute: kernel}

    def call(self, inputs, training=None):
        with _substituted(self.layer, self._substitutions()):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's Wrapper.from_config pops "layer" from the caller's dict.
        return super().from_config(
            copy.deepcopy(config), custom_objects=custom_objects
        )

    # -- export -------------------------------------------------------------
    def plain_layer(self) -> keras.layers.Layer:
        """A fresh, unbuilt layer of the wrapped layer's class and config,
        named as the wrapper, for `export_inference_model`."""
        config = copy.deepcopy(self.layer.get_config())
        config["name"] = self.name
        return type(self.layer).from_config(config)

    def plain_weights(self) -> list:
        """The values of `plain_layer()`'s weights once built: the wrapped
        layer's, with the effective kernel (and WN's effective bias)."""
        dtype = keras.backend.standardize_dtype(self._kernel_variable.dtype)
        kernel = keras.ops.convert_to_numpy(self.kernel).astype(dtype)
        bias = self.layer.bias
        bias_value = None
        if bias is not None:
            bias_value = keras.ops.convert_to_numpy(self.effective_bias)
            bias_value = bias_value.reshape(tuple(bias.shape)).astype(
                keras.backend.standardize_dtype(bias.dtype)
            )
        values = []
        for weight in self.layer.weights:
            if weight is self._kernel_variable:
                values.append(kernel)
            elif bias is not None and weight is bias:
                values.append(bias_value)
            else:
                values.append(keras.ops.convert_to_numpy(weight.value))
        return values

    @property
    def effective_bias(self):
        """The bias the layer adds (None without bias)."""
        return self.bias


_WRAPPER_LAYER = """layer: the Keras layer to wrap: `keras.layers.Dense`,
            `keras.layers.EinsumDense`, `keras.layers.Conv1D` / `Conv2D` /
            `Conv3D`, `keras.layers.Conv1DTranspose` / `Conv2DTranspose` /
            `Conv3DTranspose`, `keras.layers.DepthwiseConv1D` /
            `DepthwiseConv2D`, or the depthwise kernel of
            `keras.layers.SeparableConv1D` / `SeparableConv2D`. Its kernel
            variable holds the stored V (its kernel initializer,
            regularizer and constraint apply to V); its bias and activation
            are used as they are. Anything else raises a `ValueError`."""

_WRAPPER_UNITS = """Output units (the rows of the (units, fan_in) view): the
    last kernel axis for Dense and convolutions; the second to last for
    transposed convolutions (Keras stores their kernel as (..., out, in));
    each (input channel, multiplier) pair for depthwise kernels, whose
    fan-in is the kernel window; for EinsumDense, the kernel axes whose
    letters appear in the output spec, the fan-in being the kernel letters
    of the input spec only (an equation that leaves this ambiguous, such as
    a kernel letter in neither spec, raises a `ValueError`).

    The wrapped layer runs its own `call`, with its kernel attribute
    pointing at the effective kernel for the duration of the call; this
    works in compiled `fit` and in `stateless_call` on every backend, the
    gradient reaching V. `export_inference_model` replaces the wrapper by a
    plain copy of the wrapped layer that holds the effective kernel. The
    wrapper's dtype policy defaults to the wrapped layer's; the kernel math
    runs in float32 under mixed precision."""


def wrapper_doc(doc: str) -> str:
    """Fills the shared paragraphs of the wrappers' docstrings in."""
    return doc.replace("@LAYER@", _WRAPPER_LAYER).replace(
        "@UNITS@", _WRAPPER_UNITS
    )
