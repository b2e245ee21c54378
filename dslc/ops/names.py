"""Other frameworks' names for dslc's ops, for hints only: `Conv2D` → `conv2d`. An entry
counts only while its dslc op is registered, so the table may name ops still to come."""

from __future__ import annotations

from dslc.ops.registry import find_op

# Keras's layer classes (and a few of PyTorch's), by name with case and `_` dropped.
OTHER_NAMES = {
    # core
    "dense": "dense", "flatten": "flatten", "reshape": "reshape", "dropout": "dropout",
    "embedding": "embedding", "permute": "permute", "repeatvector": "repeat_vector",
    "cropping1d": "slice", "cropping2d": "slice", "cropping3d": "slice",
    # convolution and pooling
    "conv1d": "conv1d", "conv2d": "conv2d", "convolution1d": "conv1d",
    "convolution2d": "conv2d", "conv2dtranspose": "conv2d_transpose",
    "convolution2dtranspose": "conv2d_transpose", "convtranspose2d": "conv2d_transpose",
    "depthwiseconv2d": "depthwise_conv2d", "separableconv2d": "separable_conv2d",
    "separableconvolution2d": "separable_conv2d",
    "maxpooling1d": "maxpool1d", "maxpool1d": "maxpool1d",
    "maxpooling2d": "maxpool2d", "maxpool2d": "maxpool2d",
    "averagepooling1d": "avgpool1d", "avgpool1d": "avgpool1d",
    "averagepooling2d": "avgpool2d", "avgpool2d": "avgpool2d",
    "globalaveragepooling1d": "global_avgpool1d", "globalavgpool1d": "global_avgpool1d",
    "globalmaxpooling1d": "global_maxpool1d", "globalmaxpool1d": "global_maxpool1d",
    "globalaveragepooling2d": "global_avgpool2d", "globalavgpool2d": "global_avgpool2d",
    "globalmaxpooling2d": "global_maxpool2d", "globalmaxpool2d": "global_maxpool2d",
    "upsampling2d": "upsampling2d", "upsample": "upsampling2d",
    "zeropadding2d": "zero_padding2d", "zeropad2d": "zero_padding2d",
    # normalization, recurrent, attention
    "batchnormalization": "batch_norm", "batchnorm": "batch_norm",
    "batchnorm1d": "batch_norm", "batchnorm2d": "batch_norm",
    "layernormalization": "layer_norm", "layernorm": "layer_norm",
    "simplernn": "simple_rnn", "rnn": "simple_rnn", "lstm": "lstm", "gru": "gru",
    "bidirectional": "bidirectional", "multiheadattention": "multi_head_attention",
    # merges
    "add": "add", "concatenate": "concat", "cat": "concat", "multiply": "multiply",
    "subtract": "subtract", "average": "average", "maximum": "maximum", "minimum": "minimum",
    # activations as layers or functions
    "relu": "relu", "leakyrelu": "leaky_relu", "elu": "elu", "softmax": "softmax",
    "swish": "silu", "hardsigmoid": "hard_sigmoid", "logsoftmax": "log_softmax",
}
# Where the lower-cased name is a different dslc op: PyTorch's nn.Linear is dslc's dense
# (`linear` is the identity activation).
EXACT = {"Linear": "dense"}
# Keras layers dslc writes another way.
WRITTEN_OTHERWISE = {
    "activation": "write the activation as a layer of its own, e.g. `relu`, or as "
                  "`activation=` of the layer before",
    "input": "declare inputs as `input name: f32[...]`",
    "inputlayer": "declare inputs as `input name: f32[...]`",
    "bidirectional": "write it as an attribute of the recurrent layer, e.g. "
                     "`lstm(64, bidirectional=concat)` (Keras's merge_mode: concat, sum, mul, "
                     "ave)",
}


def known_as(name: str) -> str | None:
    """The registered dslc op that `name` stands for in Keras or PyTorch, if any."""
    target = EXACT.get(name) or OTHER_NAMES.get(name.lower().replace("_", "")) or name.lower()
    if target is not None and target != name and find_op(target) is not None:
        return target
    return None


def nearest(word: str, candidates, n: int = 3) -> list[str]:
    """Up to `n` of `candidates` spelled most like `word`, nearest first."""
    import difflib  # only on an error: `dslc check` of a good spec never needs it

    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def op_hint(name: str, candidates) -> str | None:
    """`did you mean ...?` for an unknown op or block `name`: the dslc name of a Keras or
    PyTorch layer, else the nearest of `candidates` (ops and blocks)."""
    otherwise = WRITTEN_OTHERWISE.get(name.lower().replace("_", ""))
    if otherwise is not None and find_op(name) is None:
        return otherwise
    target = known_as(name)
    if target is not None:
        return f"did you mean `{target}`?"
    close = nearest(name, candidates)
    if not close:
        return None
    listed = ", ".join(f"`{c}`" for c in close[:-1])
    return f"did you mean {listed + ' or ' if listed else ''}`{close[-1]}`?"


# Keras's (and PyTorch's) argument names for dslc's attributes: `embedding(input_dim=10)` →
# `vocab`. A hint only, and only where the op has that attribute.
OTHER_ATTRS = {
    "input_dim": "vocab", "num_embeddings": "vocab", "output_dim": "dim",
    "embedding_dim": "dim", "num_heads": "heads", "kernel_size": "kernel", "pool_size": "kernel",
    "out_channels": "filters", "out_features": "units", "stride": "strides",
    "p": "rate", "dilation_rate": "dilation", "merge_mode": "bidirectional",
    "use_causal_mask": "causal", "sequence_length": "max_len",
    "kernel_initializer": "kernel_init", "bias_initializer": "bias_init",
    "recurrent_initializer": "recurrent_init", "embeddings_initializer": "embeddings_init",
}


def attr_hint(op: str, name: str, fields) -> str | None:
    """`did you mean `vocab`?` for another framework's name of one of `op`'s attributes."""
    target = OTHER_ATTRS.get(name)
    if target is not None and target in fields:
        return f"`{name}` is the Keras or PyTorch name: dslc's `{op}` calls it `{target}`"
    return None
