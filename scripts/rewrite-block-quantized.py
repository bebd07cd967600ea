#!/usr/bin/env python3
"""Rewrites a block-quantized ONNX model into one with plain float weights that ONNX Runtime loads.

OpenCV Zoo's `*_int8bq.onnx` files store each weight as INT8 blocks with a scale per block
(`DequantizeLinear` with `block_size`, opset 21). ONNX Runtime 1.31 refuses them ("block_size
must be 0 for per-tensor quantization"), and the SFace file also declares 29 weights as graph
inputs that nothing feeds. This computes every constant `DequantizeLinear` once, exactly as the
operator defines it, stores the result as a float initializer, and drops the leftover inputs.
The weights are the same numbers the quantized file describes, so outputs match OpenCV's run of
the original to about 1e-5.

scripts/setup runs it with the pinned `onnx` of scripts/pack-tools-requirements.txt and checks
the SHA-256 of what goes in and what comes out: the rewrite is deterministic.

usage: rewrite-block-quantized.py detector|recognizer IN.onnx OUT.onnx
  detector:   the input's height and width become free (any multiple of 32), so that faces are
              detected at the photo's own resolution;
  recognizer: the batch becomes free, so that a group photo's faces are embedded in one run.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def dequantize(q, scale, zero_point, axis, block_size):
    q = q.astype(np.float32)
    zero_point = zero_point.astype(np.float32)
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis)
        zero_point = np.repeat(zero_point, block_size, axis=axis)
        # The last block may be shorter than block_size.
        index = [slice(None)] * q.ndim
        index[axis] = slice(0, q.shape[axis])
        scale, zero_point = scale[tuple(index)], zero_point[tuple(index)]
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q - zero_point) * scale).astype(np.float32)


def rewrite(model, role):
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    kept_nodes, new_inits = [], {}
    for node in graph.node:
        if node.op_type == 'DequantizeLinear' and all(i in init for i in node.input):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            arrays = [numpy_helper.to_array(init[i]) for i in node.input]
            zero_point = arrays[2] if len(arrays) > 2 else np.zeros_like(arrays[1])
            value = dequantize(arrays[0], arrays[1], zero_point, attrs.get('axis', 1), attrs.get('block_size', 0))
            new_inits[node.output[0]] = numpy_helper.from_array(value, node.output[0])
        else:
            kept_nodes.append(node)
    del graph.node[:]
    graph.node.extend(kept_nodes)
    graph.initializer.extend(new_inits.values())

    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    init_names = {i.name for i in graph.initializer}
    # Leftover weight inputs (no node reads them) and inputs that shadow an initializer both go:
    # the first make ORT demand them, the second stop it folding constants.
    inputs = [i for i in graph.input if i.name in used and i.name not in init_names]
    del graph.input[:]
    graph.input.extend(inputs)

    if role == 'detector':
        # Any input size (multiples of 32): the graph's reshapes already use -1.
        for i in graph.input:
            dims = i.type.tensor_type.shape.dim
            dims[2].dim_param, dims[3].dim_param = 'height', 'width'
        for o in graph.output:
            o.type.tensor_type.shape.dim[1].dim_param = 'anchors'
    elif role == 'recognizer':
        # Any batch: a group photo's faces are embedded in one run.
        for v in list(graph.input) + list(graph.output):
            v.type.tensor_type.shape.dim[0].dim_param = 'batch'
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ('detector', 'recognizer'):
        sys.exit(__doc__)
    role, src, dst = sys.argv[1:]
    model = rewrite(onnx.load(src), role)
    with open(dst, 'wb') as out:
        out.write(model.SerializeToString(deterministic=True))


if __name__ == '__main__':
    main()
