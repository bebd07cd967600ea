#!/usr/bin/env python3
"""dlib's face ResNet in 8 bits: what the yunet_sface pack runs as its second recognizer.

scripts/setup runs it on the float model scripts/convert-dlib-resnet.py writes, with the pinned
onnxruntime of scripts/pack-tools-requirements.txt (its quantizer is Python; only the
quantizer is used, nothing runs a model):

    quantize-dlib-resnet.py FLOAT.onnx OUT.onnx RANGES.json

RANGES.json (packs/yunet_sface/dlib-resnet-int8-ranges.json) holds the range of every tensor the
quantizer reads, measured once and committed, so the output is the same bytes on any machine:
setup checks its SHA-256. Measuring the ranges runs the float model, whose last bits differ from
one CPU to another; reading them does not.

Dev only, to measure the ranges again (also needs opencv-python-headless for YuNet and the warp):

    quantize-dlib-resnet.py FLOAT.onnx OUT.onnx RANGES.json --calibrate LFW_IMAGES \\
        --detector face_detection_yunet_2023mar.onnx [--people 500]

which runs the float model on the faces of the first photo of each of the first --people people
(sorted) of LFW, aligned as the pack aligns them: YuNet's five points onto the template of
packs/yunet_sface/manifest.toml's [fused_recognizer] by a least-squares similarity, bilinear.

The settings, and why:
  - QDQ format, the one ONNX Runtime's CPU kernels fuse into integer convolutions.
  - Weights int8 per output channel: the folded batch norms leave channels of very different
    scales, and one scale for a whole tensor costs them their precision.
  - Activations uint8 with min/max ranges, and weights reduced to 7 bits (reduce_range). On an
    x86 CPU without VNNI the integer kernel adds pairs of uint8 x int8 products in 16 bits, which
    saturates with full 8-bit weights (255 * 127 * 2 > 32767) and stays exact with 7-bit ones
    (255 * 64 * 2 < 32767). So every x86 CPU computes the same integers, VNNI or not, and a
    template made on one machine is the one another would make.
"""
import argparse
import hashlib
import logging
import os
import sys
import tomllib

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'packs', 'yunet_sface', 'manifest.toml')


def dlib_crop():
    """The pack's crop for dlib's network: its side, and where YuNet's five points go in it."""
    with open(MANIFEST, 'rb') as f:
        spec = tomllib.load(f)['fused_recognizer']
    return spec['input_size'], np.array(spec['template'], dtype=float)


def quantize(float_model, out, ranges, reader=None):
    quantize_static(float_model, out, calibration_data_reader=reader, calibration_cache_path=ranges,
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


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
    """The central face of each photo, as the pack's dlib crop, one at a time."""

    def __init__(self, images, detector, people):
        import cv2  # dev only: setup never calibrates
        self.cv2 = cv2
        cv2.setNumThreads(1)
        self.det = cv2.FaceDetectorYN.create(detector, '', (320, 320), 0.7, 0.4, 5000)
        names = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))[:people]
        self.photos = [os.path.join(images, n, sorted(os.listdir(os.path.join(images, n)))[0]) for n in names]
        self.used = 0
        self.size, self.template = dlib_crop()

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
                return {'input': x}
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('float_model')
    parser.add_argument('out')
    parser.add_argument('ranges')
    parser.add_argument('--calibrate', metavar='LFW_IMAGES')
    parser.add_argument('--detector')
    parser.add_argument('--people', type=int, default=500)
    args = parser.parse_args()
    # The quantizer advises its own pre-processing pass on every run; the ranges were measured on
    # this very graph, so the advice does not apply.
    logging.getLogger().setLevel(logging.ERROR)

    reader = None
    if args.calibrate:
        if not args.detector:
            sys.exit('--calibrate needs --detector')
        if os.path.exists(args.ranges):
            os.remove(args.ranges)  # the quantizer would read it instead of measuring
        reader = LfwChips(args.calibrate, args.detector, args.people)
    elif not os.path.isfile(args.ranges):
        sys.exit(f'{args.ranges}: no such file (measure it with --calibrate)')

    quantize(args.float_model, args.out + '.part', args.ranges, reader)
    os.replace(args.out + '.part', args.out)
    if reader is not None:
        print(f'ranges measured on {reader.used} faces into {args.ranges}')
    with open(args.out, 'rb') as f:
        print(f'{hashlib.sha256(f.read()).hexdigest()}  {args.out}')


if __name__ == '__main__':
    main()
