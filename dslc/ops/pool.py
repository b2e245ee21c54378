"""Pooling, channels-last, floor mode (as Keras): 2-D over `[H, W, C]`, 1-D over `[time, C]`."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from dslc.ir.graph import TensorType
from dslc.ops.conv import IntOrPair, check_image, check_sequence, window_1d, window_shape
from dslc.ops.registry import Op, OpAttrs, Padding, Part, ShapeError, pair, register


class PoolAttrs(OpAttrs):
    kernel: IntOrPair = 2
    strides: IntOrPair | None = None  # None: the kernel size, as Keras
    padding: Padding = "valid"

    def model_post_init(self, _ctx) -> None:
        if self.strides is None:
            object.__setattr__(self, "strides", self.kernel)


class Pool2D(Op):
    positional = ("kernel",)
    Attrs = PoolAttrs

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        if min(pair(a.kernel)) <= 0 or min(pair(a.strides)) <= 0:
            raise ShapeError(f"{self.name} kernel and strides must be positive")
        return TensorType(shape=window_shape(self.name, a, shape, shape[2]))


@register
class MaxPool2D(Pool2D):
    """Max over `kernel` windows; `same` padding never picks a padded value."""

    name = "maxpool2d"


@register
class AvgPool2D(Pool2D):
    """Mean over `kernel` windows; `same` padding averages real pixels only (as Keras)."""

    name = "avgpool2d"


class GlobalPool2D(Op):
    window: str  # the pooling op over one window as large as the image

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        return TensorType(shape=(shape[2],))

    def decompose(self, a, inputs):
        h, w, _ = inputs[0].shape
        return [Part("pool", self.window, ["$0"], kernel=(h, w)),
                Part("flatten", "flatten", ["pool"])]


@register
class GlobalAvgPool2D(GlobalPool2D):
    """Mean over height and width: `[H, W, C]` → `[C]`."""

    name = "global_avgpool2d"
    window = "avgpool2d"
    decomposes_into = ("avgpool2d", "flatten")


@register
class GlobalMaxPool2D(GlobalPool2D):
    """Max over height and width: `[H, W, C]` → `[C]`."""

    name = "global_maxpool2d"
    window = "maxpool2d"
    decomposes_into = ("maxpool2d", "flatten")


# -- 1-D: `[time, channels]` -------------------------------------------------------------------

class Pool1DAttrs(OpAttrs):
    kernel: int = 2
    strides: int | None = None  # None: the kernel size, as Keras
    padding: Padding = "valid"

    def model_post_init(self, _ctx) -> None:
        if self.strides is None:
            object.__setattr__(self, "strides", self.kernel)


class Pool1D(Op):
    positional = ("kernel",)
    Attrs = Pool1DAttrs

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_sequence(self.name, shape)
        return TensorType(shape=(window_1d(self.name, a, shape), shape[1]))


@register
class MaxPool1D(Pool1D):
    """Max over `kernel` steps of `[time, channels]`; `same` never picks a padded value."""

    name = "maxpool1d"


@register
class AvgPool1D(Pool1D):
    """Mean over `kernel` steps of `[time, channels]`; `same` averages real steps only."""

    name = "avgpool1d"


class GlobalPool1D(Op):
    window: str

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_sequence(self.name, shape)
        return TensorType(shape=(shape[1],))

    def decompose(self, a, inputs):
        steps = inputs[0].shape[0]
        if steps is None:  # a window as long as the input needs its length
            return None
        return [Part("pool", self.window, ["$0"], kernel=steps),
                Part("flatten", "flatten", ["pool"])]


@register
class GlobalAvgPool1D(GlobalPool1D):
    """Mean over time: `[time, C]` → `[C]`."""

    name = "global_avgpool1d"
    window = "avgpool1d"
    decomposes_into = ("avgpool1d", "flatten")

    def masking(self, a):
        # Keras's GlobalAveragePooling1D: the mean over real steps only (an all-padding
        # sample gives 0/0, NaN, there too)
        return "use"


@register
class GlobalMaxPool1D(GlobalPool1D):
    """Max over time: `[time, C]` → `[C]`."""

    name = "global_maxpool1d"
    window = "maxpool1d"
    decomposes_into = ("maxpool1d", "flatten")
