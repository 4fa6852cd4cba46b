"""keraslayers: normalization layers for Keras 3.

The layers are written with `keras.ops` only, so they run on every Keras
backend; the project tests them on TensorFlow and JAX.
"""

from keraslayers.batch_kalman_normalization import (
    BatchKalmanNormalization,
    KalmanTransition,
)
from keraslayers.batch_renormalization import (
    BatchRenormalization,
    LinearRamp,
    renorm_schedule,
)
from keraslayers.export import export_inference_model
from keraslayers.filter_response_normalization import (
    TLU,
    FilterResponseNormalization,
)
from keraslayers.folding import fold_batch_normalization
from keraslayers.orthogonal import (
    OrthogonalConv2D,
    OrthogonalDense,
    OrthogonalWeightNormalization,
)
from keraslayers.weight_normalization import (
    CenteredWeightNormalization,
    CenteredWeightNormConv2D,
    CenteredWeightNormDense,
    WeightNormalization,
    WeightNormConv2D,
    WeightNormDense,
)
from keraslayers.weight_standardization import (
    WeightStandardization,
    WeightStandardizedConv2D,
    WeightStandardizedDense,
)
from keraslayers.whitening import (
    DecorrelatedBatchNormalization,
    IterativeNormalization,
)

__version__ = "0.1.0"

__all__ = [
    "CenteredWeightNormConv2D",
    "CenteredWeightNormDense",
    "CenteredWeightNormalization",
    "OrthogonalConv2D",
    "OrthogonalDense",
    "OrthogonalWeightNormalization",
    "WeightNormConv2D",
    "WeightNormDense",
    "WeightNormalization",
    "WeightStandardization",
    "WeightStandardizedConv2D",
    "WeightStandardizedDense",
    "export_inference_model",
    "TLU",
    "BatchKalmanNormalization",
    "BatchRenormalization",
    "DecorrelatedBatchNormalization",
    "FilterResponseNormalization",
    "IterativeNormalization",
    "KalmanTransition",
    "LinearRamp",
    "__version__",
    "fold_batch_normalization",
    "renorm_schedule",
]
