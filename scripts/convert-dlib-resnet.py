#!/usr/bin/env python3
"""Converts dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat, CC0) to ONNX.

The .dat is a dlib::serialize() dump of the `anet_type` of dlib's
examples/dnn_face_recognition_ex.cpp. No maintained package reads that format (dlib's own
Python module can run the network but not hand out its weights), so a small reader for it is
written here, following dlib/serialize.h, dlib/dnn/{core,layers,input,loss}.h and
dlib/cuda/tensor.h. It runs with numpy and onnx alone; dlib and torch are not needed.

The network's layer sequence is checked against the example's definition, layer by layer,
filter counts, kernel sizes, strides and paddings included; anything else stops the
conversion. The ONNX model computes what dlib's forward pass computes:
  - input `input`: float32 [batch, 3, 150, 150], NCHW, raw RGB values 0..255 (R first). The
    per-channel mean subtraction and the division by 256 of dlib's input_rgb_image_sized are
    the graph's first two nodes, with the means stored in the .dat, so a caller feeds pixels.
  - output `embedding`: float32 [batch, 128], the fc layer's output, the descriptor that
    dlib's compute_face_descriptor returns (not normalised).
The affine layers (the trained batch norms, frozen) are folded into the convolutions in front
of them, in float64 and rounded once. Where a downsampling block's two branches differ in shape
(the shortcut may have half the channels; and with no padding on the stride-2 steps, 8x8 becomes 3x3
through the convolutions but 4x4 through the shortcut's 2x2 pooling, then 1x1 against 2x2),
dlib's add_prev pads the smaller with zeros after its last channel, row and column
(dlib/cuda/cpu_dlib.cpp, add(dest, src1, src2)); the graph does the same with Pad.

The output is byte-for-byte deterministic (fixed names, fixed producer, no timestamps, protobuf's
deterministic serialization); its SHA-256 is printed.

usage: convert-dlib-resnet.py IN.dat OUT.onnx
"""
import hashlib
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what opset 17 was released with; every ONNX Runtime since 1.13 loads it
PRODUCER = 'facegate scripts/convert-dlib-resnet.py'
PRODUCER_VERSION = '1'


# ---------------------------------------------------------------------------------------------
# dlib's serialization format

class DlibFormatError(Exception):
    pass


class Reader:
    """Reads the primitives of dlib/serialize.h from a byte string."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise DlibFormatError(f'file ends at byte {len(self.data)}, {n} more wanted at {self.pos}')
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self):
        # One control byte (bit 7: negative, low 4 bits: byte count), then the magnitude's
        # bytes, least significant first. Signed and unsigned types share this layout for
        # the values found here.
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise DlibFormatError(f'bad integer control byte {control:#04x} at {self.pos - 1}')
        value = int.from_bytes(self.take(size), 'little')
        return -value if control & 0x80 else value

    def float(self):
        # float_details: an int64 mantissa and an int16 exponent, value = mantissa * 2^exponent
        # (dlib/float_details.h); exponents 32000..32002 encode inf, -inf and NaN. The older
        # ASCII encoding (first byte with any of bits 0x70 set) is not used by this file.
        if self.data[self.pos] & 0x70:
            raise DlibFormatError(f'ASCII-encoded float at {self.pos}, not supported')
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            return {32000: float('inf'), 32001: float('-inf')}.get(exponent, float('nan'))
        return math.ldexp(mantissa, exponent)  # exact: dlib writes doubles' 53-bit mantissas

    def bool(self):
        ch = self.take(1)
        if ch not in (b'0', b'1'):
            raise DlibFormatError(f'bad bool {ch!r} at {self.pos - 1}')
        return ch == b'1'

    def string(self):
        return self.take(self.int()).decode('ascii')

    def version(self, expected):
        got = self.int()
        if got not in expected:
            raise DlibFormatError(f'version {got} at {self.pos}, expected one of {expected}')
        return got

    def tensor(self):
        # resizable_tensor: version 2, then num_samples, k, nr, nc, then little-endian float32s
        # (dlib/cuda/tensor.h), not float_details.
        self.version((2,))
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype='<f4').astype(np.float32).reshape(shape)

    def alias(self):
        # alias_tensor: only a shape (version 1, then num_samples, k, nr, nc).
        self.version((1,))
        return tuple(self.int() for _ in range(4))


# ---------------------------------------------------------------------------------------------
# The expected architecture, outermost layer first (the order dlib serializes the nesting in),
# spelled like the C++ templates of examples/dnn_face_recognition_ex.cpp.

def con(n, k, stride):
    # dlib's default padding: none for a strided convolution, k/2 otherwise.
    return [('con', n, k, stride, 0 if stride != 1 else k // 2)]


AFFINE, RELU = [('affine',)], [('relu',)]


def block(n, stride, sub):
    return AFFINE + con(n, 3, 1) + RELU + AFFINE + con(n, 3, stride) + sub


def ares(n, sub):  # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return RELU + [('add_prev', 1)] + block(n, 1, [('tag', 1)] + sub)


def ares_down(n, sub):  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return (RELU + [('add_prev', 2), ('avg_pool', 2, 2, 0), ('skip', 1), ('tag', 2)]
            + block(n, 2, [('tag', 1)] + sub))


def expected_architecture():
    net = con(32, 7, 2) + [('input',)]
    net = [('max_pool', 3, 2, 0)] + RELU + AFFINE + net
    for _ in range(3):
        net = ares(32, net)                                  # alevel4
    net = ares(64, ares(64, ares(64, ares_down(64, net))))  # alevel3
    net = ares(128, ares(128, ares_down(128, net)))         # alevel2
    net = ares(256, ares(256, ares_down(256, net)))         # alevel1
    net = ares_down(256, net)                               # alevel0
    return [('loss_metric',), ('fc', 128), ('avg_pool', 0, 1, 0)] + net


# ---------------------------------------------------------------------------------------------
# Parsing the .dat against that architecture

def read_details(r, spec):
    """Reads one layer's details (the *_ object), checks it against spec, returns its data."""
    kind, version = spec[0], r.string()

    def check(what, got, want):
        if got != want:
            raise DlibFormatError(f'{kind} layer: {what} is {got}, expected {want}')

    if kind == 'con':
        _, n, k, stride, pad = spec
        if version not in ('con_4', 'con_5', 'con_6'):
            raise DlibFormatError(f'unknown con_ version {version!r}')
        params = r.tensor()
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
        filters, biases = r.alias(), r.alias()
        [r.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
        use_bias = r.bool() if version in ('con_5', 'con_6') else True
        use_relu = r.bool() if version == 'con_6' else False
        check('(filters, nr, nc, stride_y, stride_x, pad_y, pad_x)',
              (num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x), (n, k, k, stride, stride, pad, pad))
        check('use_bias, use_relu', (use_bias, use_relu), (True, False))
        check('filters shape', filters[0], n)
        check('biases shape', biases, (1, n, 1, 1))
        flat = params.reshape(-1)
        size = int(np.prod(filters))
        check('params size', flat.size, size + n)
        return {'weight': flat[:size].reshape(filters), 'bias': flat[size:].copy()}

    if kind == 'affine':
        # The file holds the frozen affine_ form already (version 'affine_': gamma and beta in
        # one params tensor), not the bn_con2 of training, whose conversion (dlib's
        # affine_(const bn_&)) is therefore not needed here.
        if version not in ('affine_', 'affine_2'):
            raise DlibFormatError(f'unknown affine_ version {version!r}')
        params, gamma_shape, beta_shape = r.tensor(), r.alias(), r.alias()
        mode = r.int()
        disabled = r.bool() if version == 'affine_2' else False
        check('mode (0: CONV_MODE), disabled', (mode, disabled), (0, False))
        k = gamma_shape[1]
        check('gamma, beta shapes', (gamma_shape, beta_shape), ((1, k, 1, 1), (1, k, 1, 1)))
        check('params size', params.size, 2 * k)
        flat = params.reshape(-1)
        return {'gamma': flat[:k].copy(), 'beta': flat[k:].copy()}

    if kind == 'relu':
        if version == 'relu_2':
            check('disabled', r.bool(), False)
        elif version != 'relu_':
            raise DlibFormatError(f'unknown relu_ version {version!r}')
        return {}

    if kind in ('max_pool', 'avg_pool'):
        _, k, stride, pad = spec
        check('version', version, kind + '_2')
        got = tuple(r.int() for _ in range(6))
        check('(nr, nc, stride_y, stride_x, pad_y, pad_x)', got, (k, k, stride, stride, pad, pad))
        return {}

    if kind == 'add_prev':
        check('version', version, 'add_prev_')
        return {}

    if kind == 'fc':
        if version not in ('fc_2', 'fc_3'):
            raise DlibFormatError(f'unknown fc_ version {version!r}')
        num_outputs, num_inputs = r.int(), r.int()
        params, weights, biases = r.tensor(), r.alias(), r.alias()
        bias_mode = r.int()
        [r.float() for _ in range(4)]
        use_bias = r.bool() if version == 'fc_3' else True
        check('num_outputs', num_outputs, spec[1])
        check('bias_mode (1: FC_NO_BIAS)', bias_mode, 1)
        check('weights shape', weights, (num_inputs, num_outputs, 1, 1))
        check('params size', params.size, num_inputs * num_outputs)
        del biases, use_bias  # meaningless with FC_NO_BIAS
        # dlib computes output = input x W, with W stored num_inputs x num_outputs.
        return {'weight': params.reshape(num_inputs, num_outputs)}

    raise AssertionError(kind)


def parse(data):
    """Returns the layers in forward order (input first) as (spec, details) pairs."""
    r, arch, layers = Reader(data), expected_architecture(), []

    def descend(i):
        spec = arch[i]
        kind = spec[0]
        if kind == 'loss_metric':
            r.version((1,))
            version = r.string()
            if version == 'loss_metric_2':
                r.float(), r.float()  # margin, distance threshold: training only
            elif version != 'loss_metric_':
                raise DlibFormatError(f'expected loss_metric_, found {version!r}')
            descend(i + 1)
        elif kind in ('tag', 'skip'):
            # add_tag_layer / add_skip_layer: a version and their subnet, nothing else; their
            # ids are not in the file, they come with the checked layer sequence.
            r.version((1,))
            descend(i + 1)
            layers.append((spec, {}))
        elif arch[i + 1][0] == 'input':
            # add_layer<LAYER, INPUT_LAYER>: the input layer comes first, its version 3 adds
            # _sample_expansion_factor at the end.
            version = r.version((2, 3))
            check_string(r, 'input_rgb_image_sized')
            means = np.array([r.float() for _ in range(3)], dtype=np.float32)
            size = (r.int(), r.int())
            if size != (150, 150):
                raise DlibFormatError(f'input size {size}, expected (150, 150)')
            layers.append((arch[i + 1], {'means': means}))
            layers.append((spec, read_details(r, spec)))
            skip_training_state(r, 3 if version >= 3 else 2)
        else:
            version = r.version((1, 2))
            descend(i + 1)
            layers.append((spec, read_details(r, spec)))
            skip_training_state(r, 2 if version >= 2 else 1)

    def check_string(r, expected):
        got = r.string()
        if got != expected:
            raise DlibFormatError(f'expected {expected!r}, found {got!r}')

    descend(0)
    if r.pos != len(data):
        raise DlibFormatError(f'{len(data) - r.pos} bytes left over after the network')
    return layers


def skip_training_state(r, extra):
    """add_layer's bookkeeping after the details: three bools, x_grad, cached_output, then
    params_grad (generic add_layer v2) or grad_final (input add_layer), then for the input
    add_layer v3 an int. All of it is training state, empty or irrelevant here."""
    r.bool(), r.bool(), r.bool()
    r.tensor(), r.tensor()
    if extra >= 2:
        r.tensor()
    if extra >= 3:
        r.int()


# ---------------------------------------------------------------------------------------------
# The ONNX graph

def build(layers, source_sha256):
    nodes, inits = [], []
    shapes = {}  # tensor name -> (channels, rows, cols) for a 150x150 input

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def pooled(n, k, stride, pad):  # dlib's and ONNX's (floor) output size
        return 1 + (n + 2 * pad - k) // stride

    def pad_to(x, target, name):
        """dlib's add_prev on tensors of different shapes: zeros after the last channel, row
        and column of the smaller one (cpu_dlib.cpp add(dest, src1, src2))."""
        missing = [t - s for t, s in zip(target, shapes[x])]
        if not any(missing):
            return x
        pads = init(f'{name}_pads', np.array([0, 0, 0, 0, 0] + missing, dtype=np.int64))
        out = node('Pad', [x, pads], name, mode='constant')
        shapes[out] = target
        return out

    current, tags, i = 'input', {}, 0
    while i < len(layers):
        (spec, data), i = layers[i], i + 1
        kind, name = spec[0], f'l{i:02d}_{spec[0]}'
        if kind == 'input':
            # (pixel - mean) / 256 in float32, as input_rgb_image_sized::to_tensor does it
            # (dividing by 256 is exact, so multiplying by 1/256 gives the same bits).
            means = init('input_means', data['means'].reshape(1, 3, 1, 1))
            centred = node('Sub', [current, means], f'{name}_centred')
            scale = init('input_scale', np.array(1 / 256, dtype=np.float32))
            current = node('Mul', [centred, scale], name)
            shapes[current] = (3, 150, 150)
        elif kind == 'con':
            _, n, k, stride, pad = spec
            weight = data['weight'].astype(np.float64)
            bias = data['bias'].astype(np.float64)
            if i < len(layers) and layers[i][0][0] == 'affine':
                # gamma * (W x + b) + beta == (gamma W) x + (gamma b + beta)
                affine = layers[i][1]
                gamma = affine['gamma'].astype(np.float64)
                if gamma.size != n:
                    raise DlibFormatError(f'{name}: {gamma.size} affine channels after {n} filters')
                weight = weight * gamma[:, None, None, None]
                bias = bias * gamma + affine['beta'].astype(np.float64)
                i += 1
            w = init(f'{name}_weight', weight.astype(np.float32))
            b = init(f'{name}_bias', bias.astype(np.float32))
            c, h, wd = shapes[current]
            current = node('Conv', [current, w, b], name, kernel_shape=[k, k], strides=[stride, stride],
                           pads=[pad] * 4)
            shapes[current] = (n, pooled(h, k, stride, pad), pooled(wd, k, stride, pad))
        elif kind == 'relu':
            shape = shapes[current]
            current = node('Relu', [current], name)
            shapes[current] = shape
        elif kind == 'max_pool':
            _, k, stride, pad = spec
            c, h, wd = shapes[current]
            current = node('MaxPool', [current], name, kernel_shape=[k, k], strides=[stride, stride],
                           pads=[pad] * 4)
            shapes[current] = (c, pooled(h, k, stride, pad), pooled(wd, k, stride, pad))
        elif kind == 'avg_pool':
            _, k, stride, pad = spec
            c, h, wd = shapes[current]
            if k == 0:  # avg_pool_everything
                current = node('GlobalAveragePool', [current], name)
                shapes[current] = (c, 1, 1)
            else:
                assert pad == 0  # dlib averages over the window's part inside the image
                current = node('AveragePool', [current], name, kernel_shape=[k, k],
                               strides=[stride, stride])
                shapes[current] = (c, pooled(h, k, stride, pad), pooled(wd, k, stride, pad))
        elif kind == 'tag':
            tags[spec[1]] = current
        elif kind == 'skip':
            current = tags[spec[1]]
        elif kind == 'add_prev':
            other = tags[spec[1]]
            target = tuple(max(a, b) for a, b in zip(shapes[current], shapes[other]))
            lhs = pad_to(current, target, f'{name}_pad_a')
            rhs = pad_to(other, target, f'{name}_pad_b')
            current = node('Add', [lhs, rhs], name)
            shapes[current] = target
        elif kind == 'fc':
            flat = node('Flatten', [current], f'{name}_flatten', axis=1)
            if shapes[current] != (data['weight'].shape[0], 1, 1):
                raise DlibFormatError(f'fc input {shapes[current]} does not match {data["weight"].shape}')
            w = init(f'{name}_weight', data['weight'])
            current = node('MatMul', [flat, w], 'embedding')
        else:
            raise AssertionError(kind)

    if current != 'embedding':
        raise DlibFormatError('network does not end in its fc layer')
    graph = helper.make_graph(
        nodes, 'dlib_face_recognition_resnet_model_v1',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, 150, 150])],
        [helper.make_tensor_value_info('embedding', TensorProto.FLOAT, ['batch', 128])],
        inits,
        doc_string='dlib face recognition ResNet v1 (CC0), converted from '
                   f'dlib_face_recognition_resnet_model_v1.dat sha256 {source_sha256}. '
                   'Input: raw RGB 0..255, NCHW, 150x150 face chips as dlib.get_face_chip makes '
                   '(padding 0.25). Output: dlib\'s 128-d descriptor, not normalised.')
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name=PRODUCER, producer_version=PRODUCER_VERSION)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    if [d.dim_param or d.dim_value for d in dims] != ['batch', 128]:
        raise DlibFormatError(f'output shape {dims}')
    return model


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1:]
    with open(src, 'rb') as f:
        data = f.read()
    source_sha256 = hashlib.sha256(data).hexdigest()
    try:
        layers = parse(data)
    except DlibFormatError as e:
        sys.exit(f'{src}: not the expected dlib face recognition ResNet: {e}')
    out = build(layers, source_sha256).SerializeToString(deterministic=True)
    # Written beside and renamed, so that an interrupted run leaves no half model behind.
    with open(dst + '.part', 'wb') as f:
        f.write(out)
    os.replace(dst + '.part', dst)
    print(f'{hashlib.sha256(out).hexdigest()}  {dst}')


if __name__ == '__main__':
    main()
