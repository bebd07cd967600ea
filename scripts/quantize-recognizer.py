#!/usr/bin/env python3
"""The yunet_sface pack's two recognizers in 8 bits: SFace, and dlib's face ResNet.

scripts/setup runs it on the float models (SFace as scripts/rewrite-for-onnxruntime.py writes it,
dlib's as scripts/convert-dlib-resnet.py does) with the pinned onnxruntime and onnx of
scripts/pack-tools-requirements.txt (only the quantizer is used, nothing runs a model):

    quantize-recognizer.py sface|dlib FLOAT.onnx OUT.onnx RANGES.json

RANGES.json (packs/yunet_sface/{sface,dlib-resnet}-int8-ranges.json) holds the range of every
tensor the quantizer reads, measured once and committed, so the output is the same bytes on any
machine: setup checks its SHA-256. Measuring the ranges runs the float model, whose last bits
differ from one CPU to another; reading them does not.

Dev only, to measure the ranges again (also needs opencv-python-headless for YuNet and the warp):

    quantize-recognizer.py sface|dlib FLOAT.onnx OUT.onnx RANGES.json --calibrate LFW_IMAGES \\
        --detector face_detection_yunet_2023mar.onnx [--people N]

which runs the float model on the central face of the first photo of each of the first N people
(sorted) of LFW, aligned as the pack aligns them: YuNet's five points onto the network's template
(SFace: ArcFace's 112 px one, crates/facegate-engine/src/align.rs; dlib: the one under
[fused_recognizer] in packs/yunet_sface/manifest.toml) by a least-squares similarity, bilinear.

The settings both share, and why:
  - QDQ format, the one ONNX Runtime's CPU kernels fuse into integer convolutions.
  - Weights int8 per output channel: the folded batch norms leave channels of very different
    scales, and one scale for a whole tensor costs them their precision.
  - Activations uint8, and weights reduced to 7 bits (reduce_range). On an x86 CPU without VNNI
    the integer kernel adds pairs of uint8 x int8 products in 16 bits, which saturates with full
    8-bit weights (255 * 127 * 2 > 32767) and stays exact with 7-bit ones (255 * 64 * 2 < 32767).
    So every x86 CPU computes the same integers, VNNI or not, and a template made on one machine
    is the one another would make.

What differs (MODELS below):
  - dlib: every convolution, ranges min/max over 500 faces. Its ReLUs fuse into the integer
    convolutions, so the whole network runs in 8 bits.
  - SFace: only its seven 1x1 convolutions of the 14 and 7 px stages (conv_8 to conv_14) and the
    last fully connected layer, more than half its time in float. Its PRelus have no integer kernel
    in ONNX Runtime: each quantized tensor around one costs a quantize and a dequantize pass, which
    pays only where the convolution around it is heavy. Every quantized layer also moves the
    templates a little, about as much as any other: from conv_5 on, SFace ran in 7.9 ms instead of
    9 but missed 0.69 % of LFW's genuine pairs at 7000 instead of 0.65 % (float: 13.7 ms, 0.63 %;
    docs/accuracy.md). Its batch norms are folded into
    the convolutions first (in float64, so the same bytes anywhere), because a quantized
    convolution cannot absorb one. Ranges are the 99.999th percentile over 120 faces, which kept
    the templates closer to the float ones than min/max over 500 (from conv_5 on, cosine 0.9974
    against 0.9964 on 300 other faces): a few extreme activations otherwise stretch the 256 steps.
    (The percentile needs every value in memory: 500 faces exhaust 24 GB.)
"""
import argparse
import hashlib
import logging
import os
import sys
import tomllib
from typing import Callable, NamedTuple, Optional

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'packs', 'yunet_sface', 'manifest.toml')

# ArcFace's 112 px template, as crates/facegate-engine/src/align.rs has it (ARCFACE_TEMPLATE).
ARCFACE_TEMPLATE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                    [70.7299, 92.2041]]


def dlib_crop():
    """The pack's crop for dlib's network: its side, and where YuNet's five points go in it."""
    with open(MANIFEST, 'rb') as f:
        spec = tomllib.load(f)['fused_recognizer']
    return spec['input_size'], np.array(spec['template'], dtype=float)


def sface_crop():
    return 112, np.array(ARCFACE_TEMPLATE, dtype=float)


SFACE_QUANTIZED = [f'conv_{i}_conv2d' for i in range(8, 15)] + ['pre_fc1']

class Recipe(NamedTuple):
    """How one network is quantized. Why each setting: the docstring."""
    input_name: str
    crop: Callable
    nodes: Optional[list]  # the nodes to quantize; None for all
    fold_batch_norms: bool
    method: CalibrationMethod
    options: dict
    people: int  # the default --people


MODELS = {
    'dlib': Recipe('input', dlib_crop, None, False, CalibrationMethod.MinMax, {}, 500),
    'sface': Recipe('data', sface_crop, SFACE_QUANTIZED, True, CalibrationMethod.Percentile,
                    {'CalibPercentile': 99.999}, 120),
}


def fold_constants_and_batch_norms(model):
    """Computes the Reshapes of constant weights, and folds each BatchNormalization that follows
    a Conv into that Conv's weights and bias, in float64 (every step correctly rounded, so the
    same bytes on any machine). What is left of the graph computes the same function."""
    graph = model.graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == 'Reshape' and all(i in init for i in node.input):
            init[node.output[0]] = init[node.input[0]].reshape(init[node.input[1]])
        else:
            nodes.append(node)
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for n in nodes:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    kept = []
    for node in nodes:
        conv = producer.get(node.input[0]) if node.input else None
        if (node.op_type == 'BatchNormalization' and conv is not None and conv.op_type == 'Conv'
                and readers[conv.output[0]] == 1 and all(i in init for i in node.input[1:])):
            eps = next((a.f for a in node.attribute if a.name == 'epsilon'), 1e-5)
            gamma, beta, mean, var = (init[i].astype(np.float64) for i in node.input[1:5])
            w = init[conv.input[1]].astype(np.float64)
            b = init[conv.input[2]].astype(np.float64) if len(conv.input) > 2 else np.zeros(w.shape[0])
            factor = gamma / np.sqrt(var + np.float64(eps))
            weight_name, bias_name = f'{conv.name}_folded_weight', f'{conv.name}_folded_bias'
            init[weight_name] = (w * factor[:, None, None, None]).astype(np.float32)
            init[bias_name] = ((b - mean) * factor + beta).astype(np.float32)
            del conv.input[1:]
            conv.input.extend([weight_name, bias_name])
            conv.output[0] = node.output[0]
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in sorted(init.items()) if k in used)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def quantize(float_model, out, ranges, recipe, reader=None):
    quantize_static(float_model, out, calibration_data_reader=reader, calibration_cache_path=ranges,
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=recipe.method, nodes_to_quantize=recipe.nodes,
                    extra_options=recipe.options)


def similarity(src, dst):
    """Least-squares similarity dst ~ A src + t (Umeyama 1991, no reflection), as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    e = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    scale = (sig * e).sum() / ((s ** 2).sum(1).mean())
    a = scale * (u * e) @ vt
    return np.hstack([a, (mu_d - a @ mu_s)[:, None]])


class LfwChips(CalibrationDataReader):
    """The central face of each photo, as the network's crop, one at a time."""

    def __init__(self, images, detector, people, input_name, crop):
        import cv2  # dev only: setup never calibrates
        self.cv2 = cv2
        cv2.setNumThreads(1)
        self.det = cv2.FaceDetectorYN.create(detector, '', (320, 320), 0.7, 0.4, 5000)
        names = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))[:people]
        self.photos = [os.path.join(images, n, sorted(os.listdir(os.path.join(images, n)))[0]) for n in names]
        self.used = 0
        self.input_name = input_name
        self.size, self.template = crop()

    def chip(self, path):
        cv2 = self.cv2
        img = cv2.imread(path)
        h, w = img.shape[:2]
        self.det.setInputSize((w, h))
        _, faces = self.det.detect(img)
        if faces is None:
            return None
        centre = np.array([w / 2, h / 2])
        face = min(faces, key=lambda f: np.hypot(*(f[:2] + f[2:4] / 2 - centre)))
        points = face[4:14].reshape(5, 2).astype(float)
        chip = cv2.warpAffine(img, similarity(points, self.template), (self.size, self.size), flags=cv2.INTER_LINEAR)
        return chip[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)  # RGB, NCHW

    def get_next(self):
        while self.photos:
            x = self.chip(self.photos.pop(0))
            if x is not None:
                self.used += 1
                return {self.input_name: x}
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', choices=sorted(MODELS))
    parser.add_argument('float_model')
    parser.add_argument('out')
    parser.add_argument('ranges')
    parser.add_argument('--calibrate', metavar='LFW_IMAGES')
    parser.add_argument('--detector')
    parser.add_argument('--people', type=int)
    args = parser.parse_args()
    recipe = MODELS[args.model]
    # The quantizer advises its own pre-processing pass on every run; the ranges were measured on
    # this very graph, so the advice does not apply.
    logging.getLogger().setLevel(logging.ERROR)

    reader = None
    if args.calibrate:
        if not args.detector:
            sys.exit('--calibrate needs --detector')
        if os.path.exists(args.ranges):
            os.remove(args.ranges)  # the quantizer would read it instead of measuring
        reader = LfwChips(args.calibrate, args.detector, args.people or recipe.people, recipe.input_name,
                          recipe.crop)
    elif not os.path.isfile(args.ranges):
        sys.exit(f'{args.ranges}: no such file (measure it with --calibrate)')

    source = args.float_model
    if recipe.fold_batch_norms:
        source = args.out + '.folded'
        with open(source, 'wb') as f:
            f.write(fold_constants_and_batch_norms(onnx.load(args.float_model)).SerializeToString(deterministic=True))
    try:
        quantize(source, args.out + '.part', args.ranges, recipe, reader)
    finally:
        if recipe.fold_batch_norms:
            os.remove(source)
    os.replace(args.out + '.part', args.out)
    if reader is not None:
        print(f'ranges measured on {reader.used} faces into {args.ranges}')
    with open(args.out, 'rb') as f:
        print(f'{hashlib.sha256(f.read()).hexdigest()}  {args.out}')


if __name__ == '__main__':
    main()
