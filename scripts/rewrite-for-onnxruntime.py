#!/usr/bin/env python3
"""Rewrites OpenCV Zoo's block-quantized ONNX models into ones ONNX Runtime loads and runs fast.

OpenCV Zoo's `*_int8bq.onnx` files store each weight as INT8 blocks with a scale per block
(`DequantizeLinear` with `block_size`, opset 21). ONNX Runtime 1.31 refuses them ("block_size
must be 0 for per-tensor quantization"), and the SFace file also declares 29 weights as graph
inputs that nothing feeds. This computes every constant `DequantizeLinear` once, exactly as the
operator defines it, stores the result as a float initializer, and drops the leftover inputs.
The weights are the same numbers the quantized file describes, so outputs match OpenCV's run of
the original to about 1e-5.

The recognizer's 27 PRelu activations are then written as `Relu`, two `Mul`s and an `Add`:
PRelu(x) = (1 - slope) * Relu(x) + slope * x, with both per-channel factors computed here.
ONNX Runtime 1.31 runs PRelu with a per-channel slope at about 3 ns a value, more than half of
SFace's 21 ms on one core, and cannot fuse it into the convolutions around it; it turns the
per-channel multiplications into depthwise convolutions of its blocked layout and fuses the
`Add`, so the same network runs in 10 ms. The outputs move by under 2e-6 (float rounding).

scripts/setup runs it with the pinned `onnx` of scripts/pack-tools-requirements.txt and checks
the SHA-256 of what goes in and what comes out: the rewrite is deterministic.

usage: rewrite-block-quantized.py detector|recognizer IN.onnx OUT.onnx
  detector:   the input's height and width become free (any multiple of 32), so that faces are
              detected at the photo's own resolution;
  recognizer: the batch becomes free, so that a group photo's faces are embedded in one run,
              and PRelu becomes Relu, Mul and Add (above).
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


def prelu_as_relu_and_multiplies(graph):
    """Replaces each PRelu whose slope is a constant by (1 - slope) * Relu(x) + slope * x."""
    init = {i.name: i for i in graph.initializer}
    nodes, new_inits = [], []
    for node in graph.node:
        if node.op_type != 'PRelu' or node.input[1] not in init:
            nodes.append(node)
            continue
        x, y, name = node.input[0], node.output[0], node.name or node.output[0]
        slope = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
        new_inits += [numpy_helper.from_array(slope, f'{name}_slope'),
                      numpy_helper.from_array((1.0 - slope).astype(np.float32), f'{name}_one_minus_slope')]
        nodes += [onnx.helper.make_node('Relu', [x], [f'{name}_relu'], name=f'{name}_relu'),
                  onnx.helper.make_node('Mul', [f'{name}_relu', f'{name}_one_minus_slope'], [f'{name}_positive'],
                                        name=f'{name}_positive'),
                  onnx.helper.make_node('Mul', [x, f'{name}_slope'], [f'{name}_sloped'], name=f'{name}_sloped'),
                  onnx.helper.make_node('Add', [f'{name}_positive', f'{name}_sloped'], [y], name=f'{name}_sum')]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)


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
    if role == 'recognizer':
        prelu_as_relu_and_multiplies(graph)

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
