"""Import Keras on TensorFlow without TensorFlow's start-up noise.

TensorFlow writes oneDNN banners, CPU-feature notes and absl warnings straight to file
descriptor 2, some before its own log level is read, so the environment is set before the
first import and the descriptor is pointed at /dev/null while the import runs. `--verbose`
(the CLI sets DSLC_VERBOSE) leaves everything as TensorFlow prints it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from dslc.diagnostics import DslError


def verbose() -> bool:
    return os.environ.get("DSLC_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (e.g. embedded): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Return the `keras` module running on TensorFlow, imported quietly unless verbose."""
    loaded = sys.modules.get("keras")
    if loaded is not None and "tensorflow" in sys.modules:
        _check_backend(loaded)
        return loaded
    os.environ["KERAS_BACKEND"] = "tensorflow"
    loud = verbose()
    if not loud:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with contextlib.nullcontext() if loud else _stderr_silenced():
            import keras
            import tensorflow as tf
    except ModuleNotFoundError as exc:
        missing = (exc.name or "tensorflow").split(".")[0]
        raise DslError(f"backend `keras` needs `{missing}`, which is not installed",
                       hint="pip install 'dslc[keras]'") from None
    if not loud:
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        warnings.filterwarnings("ignore", module=r"keras(\..*)?$")
        warnings.filterwarnings("ignore", module=r"tensorflow(\..*)?$")
    _check_backend(keras)
    return keras


def _check_backend(keras) -> None:
    if keras.backend.backend() != "tensorflow":
        raise DslError(f"keras is already running on `{keras.backend.backend()}`, "
                       "backend `keras` needs TensorFlow",
                       hint="unset KERAS_BACKEND or set it to `tensorflow`")
