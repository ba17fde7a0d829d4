"""Where a shape's explanations are: its corners and its ink, found in the drawing itself, for a part mirror.

A shapes part mirror (:class:`explainer.pair.models.PartMirror`) reads "three vertices" and "four vertices" at the
drawing's corners and the other explanations along its ink, so each heatmap shows what its explanation names. Its
training needs to know where the corners are in every training image, whatever made the image (the generator, the
sketcher, a Quick, Draw! drawing) and however it was cropped; this module finds them in the preprocessed image: the
triangle or quadrilateral of largest area whose corners are extreme points of the ink (the ink's convex hull seen
from 32 directions). The shapes are convex, so those are their corners, overshoots and open corners within a pen
width or two.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from explainer.pair.models import PartMirror, ShapesMirror, part_mirror

REGIONS: tuple[str, ...] = ("corners",)  # then, as every part mirror has, the whole drawing (here: its ink)
ROUTES: tuple[tuple[int, ...], ...] = ((), (0,), (0,), (), ())  # per explanation: vertex counts read at the corners
INK_LEVEL = 0.5  # a pixel is ink below this grey level (images in [0, 1], white 1)
_DIRECTIONS = 32
_ANGLES = np.linspace(0, 2 * np.pi, _DIRECTIONS, endpoint=False)
_UNITS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
_CHOICES = {k: np.array(list(combinations(range(_DIRECTIONS), k))) for k in (3, 4)}


def shapes_part_mirror(
    main_info: list[dict], n_explanations: int, width: int, depth: int, body: ShapesMirror | None = None
) -> PartMirror:
    """A part mirror for a shapes pair. With ``body`` (the pair's trained mirror), its blocks stay, warm, and the
    read-out replaces their head: the stride-4 output of the first block (16 x 16 at 64 px) and every coarser one;
    without, the read-out takes the main network's stages (:func:`mirror_taps`, :func:`mirror_stem`)."""
    spec: dict = {"kind": "parts", "regions": list(REGIONS), "routes": [list(r) for r in ROUTES], "width": width,
                  "depth": depth, "context": True}  # fmt: skip
    info = main_info
    if body is not None:
        spec["body"] = dict(body.spec)
        info = body.feature_info
    spec["taps"], spec["stem"] = list(mirror_taps(info)), mirror_stem(info)
    mirror = part_mirror(main_info, n_explanations, spec)
    if body is not None:
        blocks = {k: v for k, v in body.state_dict().items() if k.startswith("blocks.")}
        mirror.body.load_state_dict(blocks, strict=True)
    return mirror


def mirror_taps(feature_info: list[dict]) -> tuple[int, ...]:
    """The main network stages a shapes part mirror reads: every stage of stride 4 or more (a 16 x 16 map at 64 px,
    fine enough to tell a corner from its neighbours), at least the last two."""
    coarse = tuple(i for i, stage in enumerate(feature_info) if stage["reduction"] >= 4)
    return coarse if len(coarse) >= 2 else tuple(range(len(feature_info)))[-2:]


def mirror_stem(feature_info: list[dict]) -> int | None:
    """The finer stage a shapes part mirror reads through its own strided convolution (fine detail: is an edge
    straight, are two edges the same length?): the first stage, when it has twice the resolution of the map."""
    first = mirror_taps(feature_info)[0]
    if first > 0 and feature_info[0]["size"] == 2 * feature_info[first]["size"]:
        return 0
    return None


def drawn_corners(ink: np.ndarray, count: int) -> np.ndarray | None:
    """The ``count`` (3 or 4) corners of the convex shape drawn in the boolean (H, W) ``ink`` mask, as (count, 2)
    of x, y at pixel centres; None when there is no ink."""
    if count not in _CHOICES:
        raise ValueError(f"count must be 3 or 4, got {count!r}")
    ys, xs = np.nonzero(ink)
    if len(xs) == 0:
        return None
    points = np.stack([xs, ys], axis=1).astype(np.float64) + 0.5
    extreme = points[np.argmax(points @ _UNITS.T, axis=0)]  # (directions, 2), in the hull's angular order
    chosen = extreme[_CHOICES[count]]  # (choices, count, 2)
    x, y = chosen[..., 0], chosen[..., 1]
    area = np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    return chosen[int(np.argmax(area))]


def find_corners(images: torch.Tensor, explanations: torch.Tensor) -> torch.Tensor:
    """The corners of each preprocessed image (N, 1, H, W) in [0, 1] whose ``explanations`` (N, 5) say three or
    four vertices: (N, 4, 2) of x, y in input pixels, NaN where there is no corner (a triangle's fourth, circles,
    outliers)."""
    corners = torch.full((len(images), 4, 2), float("nan"))
    masks = (images[:, 0] < INK_LEVEL).numpy()
    for i in range(len(images)):
        count = 3 if explanations[i, 1] > 0.5 else 4 if explanations[i, 2] > 0.5 else 0
        found = drawn_corners(masks[i], count) if count else None
        if found is not None:
            corners[i, :count] = torch.from_numpy(found).float()
    return corners


def move_points(points: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Points (N, P, 2) of x, y in input pixels, where they land when the images are resampled with
    ``F.affine_grid(theta)`` (N, 2, 3) (align_corners=False): the inverse of the sampling map."""
    height, width = size
    scale = torch.tensor([width / 2, height / 2])
    normal = points / scale - 1  # [-1, 1], pixel edges at the ends
    matrix, shift = theta[:, :, :2], theta[:, :, 2]
    moved = torch.linalg.solve(matrix[:, None], (normal - shift[:, None])[..., None])[..., 0]
    return (moved + 1) * scale


def region_targets(
    images: torch.Tensor, corners: torch.Tensor, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a shapes part mirror's region maps should say for preprocessed images (N, 1, H, W) in [0, 1] with their
    ``corners`` (N, 4, 2), NaN where none: (targets (N, 2, h * w), known (N, 2)). The first row is the corners (a
    Gaussian of one cell's width at each), the second the ink (each cell's share of it); each sums to 1 where known."""
    n, _, height, width = images.shape
    h, w = grid
    cell_y, cell_x = height / h, width / w
    cy = ((torch.arange(h, dtype=torch.float32) + 0.5) * cell_y)[:, None]
    cx = ((torch.arange(w, dtype=torch.float32) + 0.5) * cell_x)[None, :]
    sigma2 = 2 * (0.5 * (cell_x + cell_y)) ** 2
    present = ~torch.isnan(corners[..., 0])  # (N, 4)
    safe = torch.nan_to_num(corners)
    d2 = (cx[None, None] - safe[..., 0, None, None]) ** 2 + (cy[None, None] - safe[..., 1, None, None]) ** 2
    corner_map = (torch.exp(-d2 / sigma2) * present[..., None, None]).sum(1).flatten(1)
    ink = torch.nn.functional.adaptive_avg_pool2d((images < INK_LEVEL).float(), grid).flatten(1)
    targets = torch.stack([corner_map, ink], dim=1)
    known = torch.stack([present.any(1), ink.sum(1) > 0], dim=1).float()
    return targets / targets.sum(-1, keepdim=True).clamp(min=1e-8), known


def corner_hits(maps: torch.Tensor, corners: torch.Tensor, size: int = 64, radius: float = 0.12) -> tuple[int, int]:
    """How often the vertex explanation's map peaks within ``radius`` x the drawing's size of one of its corners:
    (hits, counted) over the images with corners. ``maps`` (N, 5, h, w) over ``size`` x ``size`` inputs; ``corners``
    as :func:`find_corners` gives them (three found: "three vertices" is looked at, four: "four vertices")."""
    from explainer.verdict.where import peaks

    hits = counted = 0
    for i in range(len(corners)):
        found = corners[i][~torch.isnan(corners[i, :, 0])].numpy()
        if len(found) < 3:
            continue
        index = 1 if len(found) == 3 else 2
        x, y = peaks(maps[i, index : index + 1], size, size)[0]
        extent = float(np.ptp(found, axis=0).max())
        hits += bool(np.hypot(found[:, 0] - x, found[:, 1] - y).min() <= radius * extent)
        counted += 1
    return hits, counted
