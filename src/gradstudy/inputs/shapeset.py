"""Shapeset-3x2 (Glorot & Bengio 2010, section 2.1), generated offline from a seed.

Each image is a 32x32 grey canvas holding one or two objects. An object starts as a regular
3-, 4- or 20-gon (triangle, quadrilateral, ellipse) of unit circumradius, gets an anisotropic
scale, then a random rotation, then a position that keeps all of it inside the image. The second
object is redrawn until it covers less than half of the first (and the first less than half of
it). The background and the objects take grey levels from two separate ranges, swapped in half
of the images. The label is the unordered set of shape types present: 3 single-object classes
and 6 pairs, 9 classes in all, unbalanced (a pair of two different types is twice as likely as a
pair of one type).

Faithful: the canvas, the shape types and their regular-polygon construction, rotation, anisotropic
scale, placement inside the image, the overlap rule, the two grey ranges with the swap, and the
9-class unordered label.
Approximated: the ranges of scale and grey level are our choices (the paper does not give them),
the rasterization is binary (a pixel belongs to an object when its centre does; no anti-aliasing),
where objects overlap the second is drawn on top, and the number of objects is 1 or 2 with equal
probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

SIZE = 32
#: Shape types, each a regular polygon with this many vertices.
SHAPES = {"triangle": 3, "quadrilateral": 4, "ellipse": 20}
#: Label of each unordered set of shape indices: singles first, then pairs.
CLASSES: tuple[tuple[int, ...], ...] = tuple((i,) for i in range(len(SHAPES))) + tuple(
    combinations_with_replacement(range(len(SHAPES)), 2)
)
#: Half-axes of an object, in pixels, before rotation (drawn independently: anisotropic).
SCALE_RANGE = (4.0, 10.0)
BACKGROUND_GREY = (0.0, 0.4)
OBJECT_GREY = (0.6, 1.0)
#: An object never covers this fraction or more of the other.
MAX_OVERLAP = 0.5
#: An object keeps at least this many pixels, so that a thin one stays visible.
MIN_AREA = 12


@dataclass(frozen=True)
class Shapeset:
    images: np.ndarray  # (n, 32, 32) float32 in [0, 1]
    labels: np.ndarray  # (n,) int32, index into CLASSES
    shapes: np.ndarray  # (n, 2) int, shape index of each object, -1 where there is no second one
    angles: np.ndarray  # (n, 2) rotation in radians, NaN where there is no second one
    masks: np.ndarray  # (n, 2, 32, 32) bool, the pixels of each object (before drawing over)


_CENTRES = np.stack(np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing="xy"), axis=-1)


def _polygon(rng: np.random.Generator, n_vertices: int) -> tuple[np.ndarray, float]:
    """Vertices (n_vertices, 2) of a scaled, rotated and placed regular polygon, and its rotation."""
    angles = 2 * np.pi * np.arange(n_vertices) / n_vertices
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scaled = unit * rng.uniform(*SCALE_RANGE, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shape = scaled @ rotation.T
    low, high = shape.min(axis=0), shape.max(axis=0)
    centre = rng.uniform(-low, SIZE - high)
    return shape + centre, theta


def _mask(vertices: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the convex polygon ``vertices`` (counter-clockwise)."""
    edges = np.roll(vertices, -1, axis=0) - vertices
    rel = _CENTRES[:, :, None, :] - vertices  # (32, 32, n_vertices, 2)
    cross = edges[:, 0] * rel[..., 1] - edges[:, 1] * rel[..., 0]
    return np.all(cross >= 0, axis=-1)


def _object(rng: np.random.Generator, shape: int) -> tuple[np.ndarray, float]:
    while True:
        vertices, theta = _polygon(rng, list(SHAPES.values())[shape])
        mask = _mask(vertices)
        if mask.sum() >= MIN_AREA:
            return mask, theta


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The larger of the fractions of ``a`` covered by ``b`` and of ``b`` covered by ``a``."""
    both = np.logical_and(a, b).sum()
    return float(max(both / a.sum(), both / b.sum()))


def generate(n: int, seed: int) -> Shapeset:
    """``n`` Shapeset-3x2 images drawn from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, SIZE, SIZE), np.float32)
    labels = np.empty(n, np.int32)
    shapes = np.full((n, 2), -1)
    angles = np.full((n, 2), np.nan)
    masks = np.zeros((n, 2, SIZE, SIZE), bool)
    for i in range(n):
        n_objects = rng.integers(1, 3)
        kinds = rng.integers(0, len(SHAPES), size=n_objects)
        background, *greys = rng.uniform(*BACKGROUND_GREY), *rng.uniform(*OBJECT_GREY, size=n_objects)
        if rng.random() < 0.5:  # swap the ranges: a light background with dark objects
            background, greys = 1 - background, [1 - g for g in greys]
        image = np.full((SIZE, SIZE), background, np.float32)
        for j, kind in enumerate(kinds):
            mask, theta = _object(rng, kind)
            while j == 1 and overlap(masks[i, 0], mask) >= MAX_OVERLAP:
                mask, theta = _object(rng, kind)
            masks[i, j], shapes[i, j], angles[i, j] = mask, kind, theta
            image[mask] = greys[j]
        images[i] = image
        labels[i] = CLASSES.index(tuple(sorted(int(k) for k in kinds)))
    return Shapeset(images=images, labels=labels, shapes=shapes, angles=angles, masks=masks)
