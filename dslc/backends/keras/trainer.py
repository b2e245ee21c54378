"""The Keras side of the shared training loop (`dslc.backends.base.Trainer`).

One optimizer step per batch runs as a traced `tf.function` (batch size free, so the short
last batch does not retrace); the loop around it — data, shuffling, augmentation, metrics,
progress, checkpoints — is dslc/train's, shared with PyTorch.

Softmax/sigmoid outputs trained with cross-entropy: Keras's TensorFlow backend recognises a
softmax/sigmoid tensor fed to the loss and computes the loss from its logits
(tf.nn.*_cross_entropy_with_logits), the numerically stable fused form. Nothing here decides
it: a layer between the activation and the output that makes a new tensor in training
(dropout, flatten, reshape) leaves the loss to the clipped probabilities, which trains too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np

from dslc.backends.base import Trainer, TrainOptions
from dslc.backends.keras.quiet import import_keras
from dslc.backends.keras.runtime import (
    build_model,
    feed,
    inference_fn,
    mirrored_devices,
    predict_batches,
    resolve_device,
    tensorflow,
)
from dslc.backends.keras.weights import assign, model_variables, read
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ir.train import Loss, Optimizer, TrainConfig
from dslc.ops.registry import SMALL_BATCH_MACS, graph_macs
from dslc.train.distributed import shard
from dslc.train.regularisation import class_weights, decays, output_classes, sample_weights
from dslc.train.targets import shape_targets
from dslc.weights import init_weights


def make_loss(keras: Any, loss: Loss, classes: int) -> Any:
    """The Keras loss object for the IR's loss (mean over the batch, as every backend)."""
    ls, logits = loss.label_smoothing, loss.from_logits
    if loss.name == "mse":
        return keras.losses.MeanSquaredError()
    if loss.name == "mae":
        return keras.losses.MeanAbsoluteError()
    if loss.name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(from_logits=logits, label_smoothing=ls)
    if loss.name == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(from_logits=logits, label_smoothing=ls)
    if loss.name == "sparse_categorical_crossentropy":
        if not ls:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        # Keras's sparse loss has no label smoothing: one-hot the labels in the step instead.
        cce = keras.losses.CategoricalCrossentropy(from_logits=logits, label_smoothing=ls)

        def smoothed(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            return cce(keras.ops.one_hot(keras.ops.cast(y_true, "int32"), classes), y_pred,
                       sample_weight=sample_weight)

        return smoothed
    raise DslError(f"loss `{loss.name}` is not supported by backend keras", loss.span)


def make_optimizer(keras: Any, opt: Optimizer) -> Any:
    """Keras optimizers with every value the IR pins. Weight decay: L2 added to the gradient
    (PyTorch's meaning) for sgd/gd/adam/rmsprop, decoupled for adamw; kernels only (the
    trainer excludes biases and gamma/beta, dslc/train/regularisation.py)."""
    if opt.name in ("sgd", "gd"):
        return keras.optimizers.SGD(learning_rate=opt.lr, momentum=opt.momentum,
                                    nesterov=opt.nesterov)
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.lr, beta_1=opt.beta1, beta_2=opt.beta2,
                                     epsilon=opt.epsilon)
    if opt.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=opt.lr, weight_decay=opt.weight_decay,
                                      beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.epsilon)
    if opt.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=opt.lr, rho=opt.rho, momentum=opt.momentum,
                                        epsilon=opt.epsilon)
    raise DslError(f"optimizer `{opt.name}` is not supported by backend keras", opt.span)


# One CPU thread for small batches (SMALL_BATCH_MACS), the torch backend's rule: digits_cnn
# trains in 2.1 s vs 4.5 s. It uses the spec's batch because TensorFlow fixes its threads
# before its first op; TF_NUM_INTRAOP_THREADS, when set, wins.
def choose_threads(tf: Any, graph: Graph, batch: int | None, device: str) -> None:
    if device != "cpu" or "TF_NUM_INTRAOP_THREADS" in os.environ or batch is None:
        return
    if graph_macs(graph) * batch < SMALL_BATCH_MACS:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already running in this process: keep its threads
            pass


class KerasTrainer(Trainer):
    """Model, loss and optimizer for one training run, starting from `init_weights(seed)`."""

    def __init__(self, graph: Graph, config: TrainConfig, device: str = "cpu", seed: int = 0,
                 options: TrainOptions | None = None):
        options = options or TrainOptions()
        self.precision = options.precision
        keras = import_keras()
        self.tf = tensorflow()
        # Before anything starts TensorFlow: splitting the CPU into devices is only possible then.
        mirrored = (mirrored_devices(options.devices, device if device != "auto" else "auto")
                    if options.devices > 1 and not options.distributed else None)
        self.strategy: Any = None
        self.distributed = options.distributed
        if options.distributed:  # one worker of a TF_CONFIG cluster (multiworker.py)
            choose_threads(self.tf, graph, config.batch, device)  # before TensorFlow starts
            from dslc.backends.keras.multiworker import strategy

            self.strategy = strategy(self.tf, device)
        keras.utils.set_random_seed(seed)
        self.graph, self.config, self.seed = graph, config, seed
        self.device, self._tf_device = resolve_device(device)
        choose_threads(self.tf, graph, config.batch, self.device)
        out_shape = graph.type_of(graph.outputs[0]).shape
        self._out_shape = tuple(out_shape)
        place: Any = self.tf.device(self._tf_device)
        if mirrored is not None:  # variables mirrored on each device; batches split among them
            self.strategy = self.tf.distribute.MirroredStrategy(mirrored)
        if self.strategy is not None:
            place = self.strategy.scope()
        with place:
            self.model = build_model(graph, self._tf_device, self.precision)
            self.variables = model_variables(self.model, graph)
            assign(self.variables, init_weights(graph, seed), graph.name)
            self.loss_fn = make_loss(keras, config.loss, int(out_shape[-1] or 1))
            self.optimizer = make_optimizer(keras, config.optimizer)
            if config.optimizer.name == "adamw":  # decay kernels only (regularisation.py)
                self.optimizer.exclude_from_weight_decay(
                    var_list=[v for k, v in self.variables.items() if not decays(k)])
            if self.precision == "fp16":  # dynamic loss scaling, Keras's mixed_float16 rule
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        self._l2 = (config.optimizer.weight_decay
                    if config.optimizer.name != "adamw" else 0.0)
        if self.precision == "fp16" and (config.clip_value or config.clip_norm or self._l2):
            # They would act on the scaled gradients, which only the optimizer unscales.
            raise DslError("keras at --precision fp16 trains without gradient clipping and "
                           f"{config.optimizer.name} weight decay", config.span,
                           "use --precision bf16 (no loss scaling), or the torch backend")
        kernels = {v.path for k, v in self.variables.items() if decays(k)}
        self._decay = [v.path in kernels for v in self.model.trainable_variables]
        self._steps: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._infer = inference_fn(self.model, graph)

    # weights -------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        assign(self.variables, weights, self.graph.name)

    def get_weights(self) -> dict[str, np.ndarray]:
        return read(self.variables)

    # training ------------------------------------------------------------------------
    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Labels as the loss compares them with the outputs (dslc/train/targets.py)."""
        return shape_targets(y, self.config.loss, self._out_shape)

    def _step_for(self, y: np.ndarray) -> Callable[..., Any]:
        key = (y.dtype.str, y.shape[1:])
        step = self._steps.get(key)
        if step is None:
            make = self._make_step if self.strategy is None else self._make_mirrored_step
            step = self._steps[key] = make(y)
        return step

    def _make_mirrored_step(self, y: np.ndarray) -> Callable[..., Any]:
        """One step on every replica of the MirroredStrategy: each takes its contiguous share
        of the batch, its loss weighted by that share; the gradients are summed across
        replicas (the gradient of the whole batch's mean, as on one device), then clipped and
        decayed as on one device."""
        tf, model, loss_fn, opt, l2 = self.tf, self.model, self.loss_fn, self.optimizer, self._l2
        variables, decay, cfg = model.trainable_variables, self._decay, self.config
        weighted = cfg.class_weight is not None
        strategy = self.strategy
        assert strategy is not None
        replicas = strategy.num_replicas_in_sync

        def replica_step(share: Any, y_true: Any, *xs: Any) -> Any:
            w, xs = (xs[0], xs[1:]) if weighted else (None, xs)
            with tf.GradientTape() as tape:
                pred = model(xs[0] if len(xs) == 1 else list(xs), training=True)
                if isinstance(pred, (list, tuple)):
                    pred = pred[0]
                loss = loss_fn(y_true, pred) if w is None else loss_fn(y_true, pred,
                                                                       sample_weight=w)
                # Keras divides a loss by the replica count inside a strategy
                # (scale_loss_for_distribution); the share weights it instead. An empty share
                # gives 0, not NaN.
                loss = tf.reduce_sum(loss) * (share * replicas)
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
            if cfg.clip_value:
                grads = [tf.clip_by_value(g, -cfg.clip_value, cfg.clip_value) for g in grads]
            if cfg.clip_norm:
                scale = cfg.clip_norm / tf.maximum(tf.linalg.global_norm(grads), cfg.clip_norm)
                grads = [g * scale for g in grads]
            if l2:
                grads = [g + l2 * v if d else g
                         for g, v, d in zip(grads, variables, decay, strict=True)]
            # Keras sums the replicas' gradients again: hand it 1/replicas of the total each.
            opt.apply_gradients(zip([g / replicas for g in grads], variables, strict=True))
            return loss

        @tf.function(reduce_retracing=True)
        def run(*args: Any) -> Any:
            per = strategy.run(replica_step, args=args)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None)

        def step(y_batch: np.ndarray, *x_batches: Any) -> Any:
            size = len(y_batch)
            parts = [shard(size, r, replicas) for r in range(replicas)]

            def split(a: Any, dtype: Any = None) -> Any:
                return strategy.experimental_distribute_values_from_function(
                    lambda ctx: tf.constant(np.asarray(
                        a[parts[ctx.replica_id_in_sync_group][0]:
                          parts[ctx.replica_id_in_sync_group][1]], dtype)))

            shares = strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant((parts[ctx.replica_id_in_sync_group][1]
                                         - parts[ctx.replica_id_in_sync_group][0]) / size,
                                        tf.float32))
            xs = [split(a, i.type.numpy_dtype)
                  for i, a in zip(self.graph.inputs, x_batches, strict=True)]
            return run(shares, split(y_batch), *xs)

        return step

    def _make_step(self, y: np.ndarray) -> Callable[..., Any]:
        tf, model, loss_fn, opt, l2 = self.tf, self.model, self.loss_fn, self.optimizer, self._l2
        variables, decay, cfg = model.trainable_variables, self._decay, self.config
        weighted = cfg.class_weight is not None
        x_spec = [tf.TensorSpec((None, *i.type.shape), tf.as_dtype(i.type.numpy_dtype))
                  for i in self.graph.inputs]
        y_spec = tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype))
        w_spec = [tf.TensorSpec((None,), tf.float32)] if weighted else []

        def step(y_true: Any, *xs: Any) -> Any:
            w, xs = (xs[0], xs[1:]) if weighted else (None, xs)
            with tf.GradientTape() as tape:
                pred = model(xs[0] if len(xs) == 1 else list(xs), training=True)
                if isinstance(pred, (list, tuple)):
                    pred = pred[0]
                loss = loss_fn(y_true, pred) if w is None else loss_fn(y_true, pred,
                                                                       sample_weight=w)
                scaled = opt.scale_loss(loss)  # the loss itself but at fp16
            grads = tape.gradient(scaled, variables)
            if cfg.clip_value:  # regularisation.py: value, then global norm, then decay
                grads = [tf.clip_by_value(g, -cfg.clip_value, cfg.clip_value) for g in grads]
            if cfg.clip_norm:
                scale = cfg.clip_norm / tf.maximum(tf.linalg.global_norm(grads), cfg.clip_norm)
                grads = [g * scale for g in grads]
            if l2:
                grads = [g + l2 * v if d else g
                         for g, v, d in zip(grads, variables, decay, strict=True)]
            opt.apply_gradients(zip(grads, variables, strict=True))
            return loss

        return tf.function(step, input_signature=[y_spec, *w_spec, *x_spec])

    def begin_epoch(self, epoch: int) -> None:
        """Reseed every dropout layer from (seed, epoch), so a resumed run draws the masks the
        uninterrupted run would have drawn."""
        for i, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                rng = np.random.default_rng([self.seed % 2**63, epoch, 3, i])
                value = int(rng.integers(0, 2**31 - 1))
                generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))

    def train_epoch(self, x: Any, y: np.ndarray, batch_size: int | None,
                    on_batch: Callable[[int, float], None]) -> float:
        xs = feed(self.graph, x)
        cw = class_weights(self.config, y, output_classes(self.config.loss, self._out_shape))
        sw = sample_weights(y, cw)
        if sw is not None:
            xs = [sw, *xs]  # the step takes the weights before the inputs
        y = self._targets(y)
        n = len(y)
        batch_size = batch_size or max(n, 1)  # None: full batch (gradient descent)
        step = self._step_for(y)
        total = 0.0
        # A MirroredStrategy places each replica itself.
        place = self.tf.device(self._tf_device) if self.strategy is None else nullcontext()
        with place:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                try:
                    loss = float(step(y[start:stop], *(a[start:stop] for a in xs)))
                except (self.tf.errors.UnavailableError, self.tf.errors.AbortedError,
                        self.tf.errors.CancelledError) as err:
                    if not self.distributed:
                        raise
                    # A worker died or became unreachable mid-step: the collective failed.
                    raise DslError("a keras worker of the MultiWorkerMirroredStrategy stopped "
                                   f"answering during training ({type(err).__name__})",
                                   hint="the other worker's error, if any, says why; "
                                   "--resume continues from the last epoch's checkpoint") \
                        from None
                total += loss * (stop - start)
                on_batch(stop - start, loss)
        return total / n if n else float("nan")

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        return predict_batches(self._infer, feed(self.graph, x), self._tf_device, batch_size)

    # optimizer state for --resume ----------------------------------------------------
    def _optimizer_variables(self) -> dict[str, Any]:
        """Optimizer variables under stable names: `iteration` and `<layer>.<param>.<slot>`
        (e.g. `dense_1.kernel.momentum`), not Keras's auto-numbered paths (`adam_2/...`).
        The learning rate comes from the spec, so a resumed run uses the spec's value."""
        prefixes = sorted(((v.path.replace("/", "_") + "_", key)
                           for key, v in self.variables.items()),
                          key=lambda item: -len(item[0]))
        named = {}
        for var in self.optimizer.variables:
            if var.name == "learning_rate":
                continue
            key = var.name
            for prefix, canonical in prefixes:
                if var.name.startswith(prefix):
                    key = f"{canonical}.{var.name[len(prefix):]}"
                    break
            named[key] = var
        return named

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.numpy()) for k, v in self._optimizer_variables().items()}

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        variables = self._optimizer_variables()
        missing = sorted(set(variables) - set(state))
        extra = sorted(set(state) - set(variables))
        if missing or extra:
            raise DslError("the checkpoint's optimizer state does not fit this keras optimizer"
                           + (f"; missing {', '.join(missing[:3])}" if missing else "")
                           + (f"; unexpected {', '.join(extra[:3])}" if extra else ""),
                           hint="resume with the backend and optimizer the run started with")
        for key, var in variables.items():
            arr = np.asarray(state[key])
            shape = tuple(var.shape)
            if arr.size == 1 and shape == ():  # checkpoints may store scalars as [1]
                arr = arr.reshape(())
            if tuple(arr.shape) != shape:
                raise DslError(f"optimizer state `{key}` has shape {list(arr.shape)}, "
                               f"expected {list(var.shape)}")
            var.assign(arr.astype(var.dtype))

    def set_lr(self, lr: float) -> None:
        # A variable the traced step reads at every call: no retrace.
        self.optimizer.learning_rate = lr
