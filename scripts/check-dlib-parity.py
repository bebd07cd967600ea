#!/usr/bin/env python3
"""Checks the ONNX conversion of dlib's face recognition ResNet against dlib itself (dev only).

Not run by scripts/setup: it needs dlib, which the service never does. Install the checking
tools into a scratch folder, never the system's Python:

    python3 -m pip install --target /tmp/dlibwork/py \\
        dlib-bin==20.0.1.post1 onnxruntime==1.32.0 pillow==13.0.0
    PYTHONPATH=/tmp/dlibwork/py python3 scripts/check-dlib-parity.py \\
        MODELS_DIR MODEL.onnx [--lfw DIR] [--people 300]

MODELS_DIR holds dlib_face_recognition_resnet_model_v1.dat and the 5- and 68-point shape
predictors (face_recognition_models 0.3.0's face_recognition_models/models); MODEL.onnx is what
scripts/convert-dlib-resnet.py wrote. The photos are the first (sorted) of each of the first
--people people (sorted) of LFW, each photo's most central detected face.

1. Parity: dlib.get_face_chip (5-point landmarks, 150x150, padding 0.25), then dlib's
   compute_face_descriptor on that chip and the ONNX model on the same chip. Target: cosine
   >= 0.9999 on every face.
2. Alignment without dlib's landmarks: where the five points of a YuNet-style detector (eye
   centres, nose tip, mouth corners) land in dlib's chip, derived from the 68-point mean face
   of dlib's get_face_chip_details; then, with those five points taken from dlib's 68-point
   predictor, a least-squares similarity onto them, a bilinear 150x150 warp and the ONNX
   descriptor, compared with dlib's descriptor of its own chip. A few other choices of points
   are measured the same way.
"""
import argparse
import glob
import os
import sys
import time

import dlib
import numpy as np
import onnxruntime as ort
from PIL import Image

SIZE, PADDING = 150, 0.25

# dlib/image_transforms/interpolation.h, get_face_chip_details: the 5-point predictor's
# landmarks (image-right eye outer and inner corner, image-left eye outer and inner corner,
# bottom of the nose) and the 68-point mean face for landmarks 17..67, both in a unit frame.
FIVE_POINT = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                       [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                       [0.4901123135679, 0.6277975316475]])
MEAN_FACE_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689]
MEAN_FACE_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182]
MEAN_FACE = np.full((68, 2), np.nan)
MEAN_FACE[17:] = np.array([MEAN_FACE_X, MEAN_FACE_Y]).T

FIVE_NAMES = ['image-left eye', 'image-right eye', 'nose tip', 'image-left mouth corner',
              'image-right mouth corner']


def chip_frame(unit):
    """dlib's chip frame: (padding + p) / (2 padding + 1) * size. Chip pixel c's centre sits at
    about c + 0.5 in it (exactly so when the chip has the photo's scale; see dlib_chip_to_image)."""
    return (PADDING + unit) / (2 * PADDING + 1) * SIZE


def yunet_points(shape68):
    """The five YuNet points in a 68-point layout (rows: landmarks, columns: x, y)."""
    return np.array([shape68[36:42].mean(0), shape68[42:48].mean(0), shape68[30], shape68[48],
                     shape68[54]])


def similarity(src, dst, weights=None):
    """Least-squares similarity dst ~ A src + t (Umeyama 1991, no reflection)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd((d * w[:, None]).T @ s)
    e = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    scale = (sig * e).sum() / (w * (s ** 2).sum(1)).sum()
    a = scale * (u * e) @ vt
    return a, mu_d - a @ mu_s


def pixel_grid():
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    return np.stack([xs.ravel(), ys.ravel()], 1)


def dlib_chip_to_image(a, t):
    """Image positions of the chip's pixel centres, as dlib's chip_details and
    extract_image_chips place them for a chip-frame-to-image similarity (a, t): a rectangle of
    size*scale - 1 image pixels centred on the chip frame's centre, its corners on the corner
    pixels, so pixel c sits at 75 + (c - 74.5) * (150 s - 1) / (149 s) in the chip frame."""
    scale = np.hypot(*a[:, 0])
    k = (SIZE * scale - 1) / ((SIZE - 1) * scale)
    u = SIZE / 2 + (pixel_grid() - (SIZE - 1) / 2) * k
    return u @ a.T + t


def sample(img, points):
    """dlib's interpolate_bilinear: black outside, channel values truncated to integers."""
    h, w = img.shape[:2]
    x, y = points[:, 0], points[:, 1]
    left, top = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    l, t = np.clip(left, 0, w - 2), np.clip(top, 0, h - 2)
    fx, fy = (x - l)[:, None], (y - t)[:, None]
    im = img.astype(float)
    v = ((1 - fy) * ((1 - fx) * im[t, l] + fx * im[t, l + 1])
         + fy * ((1 - fx) * im[t + 1, l] + fx * im[t + 1, l + 1]))
    v[~inside] = 0
    return v.astype(np.uint8).reshape(SIZE, SIZE, 3)


def warp(img, image_points, chip_points, weights=None, direction='chip_to_image', exact=False):
    """A 150x150 chip whose pixel grid puts image_points on chip_points.

    chip_points are in dlib's chip frame. exact: place pixels as dlib does (scale-dependent);
    otherwise pixel c's centre is at c + 0.5, i.e. the points are at chip_points - 0.5 in pixel
    indices, which is what a plain warpAffine-style sampler with fixed targets does."""
    if direction == 'chip_to_image':  # what dlib fits
        a, t = similarity(chip_points, image_points, weights)
    else:
        b, s = similarity(image_points, chip_points, weights)
        a = np.linalg.inv(b)
        t = -a @ s
    points = dlib_chip_to_image(a, t) if exact else (pixel_grid() + 0.5) @ a.T + t
    return sample(img, points)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def summary(values):
    v = np.asarray(values)
    return f'mean {v.mean():.5f}  p5 {np.percentile(v, 5):.5f}  min {v.min():.5f}'


def distances(values):
    v = np.asarray(values)
    return f'mean {v.mean():.4f}  p95 {np.percentile(v, 95):.4f}  max {v.max():.4f}'


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models')
    parser.add_argument('onnx')
    parser.add_argument('--lfw', default=os.path.join(here, '..', '..', 'shared', 'datasets', 'lfw', 'images'))
    parser.add_argument('--people', type=int, default=300)
    args = parser.parse_args()

    # Geometry: the five YuNet points in the chip, from the 68-point mean face.
    five_68 = chip_frame(yunet_points(MEAN_FACE))
    print(f'reference points, {SIZE}x{SIZE} chip, padding {PADDING}: dlib chip frame (pixel '
          'index with pixel centres at integers = frame - 0.5)')
    for name, p in zip(FIVE_NAMES, five_68):
        print(f'  {name:26s} ({p[0]:.4f}, {p[1]:.4f})  pixel ({p[0] - 0.5:.4f}, {p[1] - 0.5:.4f})')
    print('5-point constants against the 68-point mean face (chip frame, pixels):')
    for i, (j, what) in enumerate([(45, 'image-right eye outer'), (42, 'image-right eye inner'),
                                   (36, 'image-left eye outer'), (39, 'image-left eye inner'),
                                   (33, 'subnasale')]):
        p5, p68 = chip_frame(FIVE_POINT[i]), chip_frame(MEAN_FACE[j])
        print(f'  {what:22s} 5-point ({p5[0]:.3f}, {p5[1]:.3f})  68-point #{j} ({p68[0]:.3f}, '
              f'{p68[1]:.3f})  off by {np.hypot(*(p5 - p68)):.3f}')

    models = args.models
    detector = dlib.get_frontal_face_detector()
    predictor5 = dlib.shape_predictor(os.path.join(models, 'shape_predictor_5_face_landmarks.dat'))
    predictor68 = dlib.shape_predictor(os.path.join(models, 'shape_predictor_68_face_landmarks.dat'))
    recognizer = dlib.face_recognition_model_v1(os.path.join(models, 'dlib_face_recognition_resnet_model_v1.dat'))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, options, providers=['CPUExecutionProvider'])

    def onnx_descriptors(chips):
        x = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
        return session.run(['embedding'], {'input': x})[0].astype(np.float64)

    people = sorted(d for d in os.listdir(args.lfw) if os.path.isdir(os.path.join(args.lfw, d)))[:args.people]
    mouth_centre_68 = five_68[3:].mean(0)
    variants = {
        'five points (ref -> image fit)': lambda img, p: warp(img, p, five_68),
        'five points, image -> ref fit': lambda img, p: warp(img, p, five_68, direction='image_to_chip'),
        'five points, dlib pixel placement': lambda img, p: warp(img, p, five_68, exact=True),
        'eyes + mouth centre': lambda img, p: warp(img, np.vstack([p[:2], p[3:].mean(0)]),
                                                   np.vstack([five_68[:2], mouth_centre_68])),
        'eyes + mouth corners (no nose)': lambda img, p: warp(img, p[[0, 1, 3, 4]], five_68[[0, 1, 3, 4]]),
        'five points, nose weight 0.25': lambda img, p: warp(img, p, five_68, weights=[1, 1, .25, 1, 1]),
    }
    names = list(variants) + ['dlib 5-point points, this warp', 'dlib 68-point chip (dlib)']
    results = {name: [] for name in names}  # (cosine, euclidean distance) per face
    max_abs, worst_cos, onnx_seconds, dlib_seconds, faces, no_face = 0.0, 1.0, [], [], 0, []
    in_chip = []  # the five YuNet points in dlib's 5-point chip frame, per face
    samples = []  # (image, yunet points, dlib descriptor), for the fitted-reference variant
    for person in people:
        photo = sorted(glob.glob(os.path.join(args.lfw, person, '*.jpg')))[0]
        img = np.ascontiguousarray(np.asarray(Image.open(photo).convert('RGB')))
        dets = detector(img, 1)
        if not dets:
            no_face.append(person)
            continue
        centre = np.array(img.shape[1::-1]) / 2
        det = min(dets, key=lambda r: np.hypot(*(np.array([r.center().x, r.center().y]) - centre)))
        shape5 = predictor5(img, det)
        chip = dlib.get_face_chip(img, shape5, size=SIZE, padding=PADDING)

        start = time.perf_counter()
        want = np.array(recognizer.compute_face_descriptor(chip))
        dlib_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        got = onnx_descriptors([chip])[0]
        onnx_seconds.append(time.perf_counter() - start)
        max_abs = max(max_abs, float(np.abs(got - want).max()))
        worst_cos = min(worst_cos, cosine(got, want))
        faces += 1

        shape68 = predictor68(img, det)
        p68 = np.array([[p.x, p.y] for p in shape68.parts()], float)
        p5 = np.array([[p.x, p.y] for p in shape5.parts()], float)
        yunet = yunet_points(p68)
        chips = [f(img, yunet) for f in variants.values()]
        chips.append(warp(img, p5, chip_frame(FIVE_POINT), exact=True))
        descriptors = list(onnx_descriptors(chips))
        chip68 = dlib.get_face_chip(img, shape68, size=SIZE, padding=PADDING)
        descriptors.append(np.array(recognizer.compute_face_descriptor(chip68)))
        for name, d in zip(names, descriptors):
            results[name].append((cosine(d, want), float(np.linalg.norm(d - want))))
        # Where the YuNet points sit in dlib's 5-point chip (its chip-to-image fit, inverted).
        a, t = similarity(chip_frame(FIVE_POINT), p5)
        in_chip.append((yunet - t) @ np.linalg.inv(a).T)
        samples.append((img, yunet, want))

    print(f'\nparity on {faces} faces ({len(people)} photos, no face found in {len(no_face)}'
          f'{": " + ", ".join(no_face) if no_face else ""}):')
    print(f'  max abs difference {max_abs:.3g}, worst cosine {worst_cos:.8f}'
          f'  -> {"PASS" if worst_cos >= 0.9999 else "FAIL"} (target >= 0.9999 on every face)')
    print(f'  time per face, batch 1: onnxruntime {ort.__version__} (1 thread) '
          f'median {1e3 * np.median(onnx_seconds):.1f} ms; dlib {dlib.__version__} '
          f'median {1e3 * np.median(dlib_seconds):.1f} ms')

    print('\nalignment: the ONNX descriptor of each chip against dlib\'s descriptor of its own '
          '5-point chip: cosine, and Euclidean distance (dlib\'s same-person threshold is 0.6)')
    for name, values in results.items():
        cos, dist = np.array(values).T
        print(f'  {name:34s} cos {summary(cos)} | dist {distances(dist)}')

    # Reference points fitted to where the YuNet points land in dlib's 5-point chips, on the
    # even-numbered faces, measured on the odd-numbered ones against the mean-face points.
    in_chip = np.array(in_chip)
    fitted = in_chip[0::2].mean(0)
    print('\nYuNet points in dlib\'s 5-point chips (chip frame), mean and spread over the faces:')
    for name, m, p, s in zip(FIVE_NAMES, in_chip.mean(0), five_68, in_chip.std(0)):
        print(f'  {name:26s} mean ({m[0]:.4f}, {m[1]:.4f})  mean face ({p[0]:.4f}, {p[1]:.4f})'
              f'  std ({s[0]:.2f}, {s[1]:.2f})')
    held_out = samples[1::2]
    for name, ref in [('mean-face reference', five_68), ('fitted reference', fitted)]:
        chips = [warp(img, yunet, ref) for img, yunet, _ in held_out]
        values = [cosine(d, want) for d, (_, _, want) in zip(onnx_descriptors(chips), held_out)]
        print(f'  odd faces, {name:22s} {summary(values)}')
    return 0 if worst_cos >= 0.9999 else 1


if __name__ == '__main__':
    sys.exit(main())
