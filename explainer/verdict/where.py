"""Where an explanation looks: heatmaps over the network's input, mapped back to the image's own pixels.

A heatmap is a small grid (the feature map it was read from) laid over the network's input. The input itself is a
part of the image, resized: :class:`InputFrame` says which part, so that a heatmap's peak becomes a pixel of the
image file (after its EXIF orientation), x to the right and y down from the top-left corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class InputFrame:
    """The network input's place in the image: input pixel (u, v) lies at image pixel (x0 + u * sx, y0 + v * sy).

    ``u`` and ``v`` are continuous coordinates (0 is the left or top edge of the first input pixel), and so are x
    and y. The frame may reach outside the image (a shape drawn near an edge is padded with white).
    """

    x0: float
    y0: float
    sx: float
    sy: float
    input_width: int
    input_height: int
    image_width: int
    image_height: int

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return self.x0 + u * self.sx, self.y0 + v * self.sy

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.x0) / self.sx, (y - self.y0) / self.sy

    def resized(self, width: int, height: int) -> InputFrame:
        """The same frame over the image resized to ``width`` x ``height`` (a thumbnail): a heatmap then lands on the
        thumbnail's pixels as it does on the image's."""
        fx, fy = width / self.image_width, height / self.image_height
        return InputFrame(
            self.x0 * fx, self.y0 * fy, self.sx * fx, self.sy * fy, self.input_width, self.input_height, width, height
        )


def resize_crop_frame(image_size: tuple[int, int], resize: int, crop: int) -> InputFrame:
    """The frame of torchvision's ``Resize(resize)`` (the shorter side) then ``CenterCrop(crop)`` (no crop: 0)."""
    width, height = image_size
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    sx, sy = width / new_w, height / new_h
    if crop == 0:
        return InputFrame(0.0, 0.0, sx, sy, new_w, new_h, width, height)
    left, top = int(round((new_w - crop) / 2.0)), int(round((new_h - crop) / 2.0))
    return InputFrame(left * sx, top * sy, sx, sy, crop, crop, width, height)


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """A (h, w) grid resized bilinearly to (height, width), each grid value at the centre of its cell."""
    image = Image.fromarray(np.asarray(grid, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


@dataclass
class Where:
    """The heatmaps of one image: every class's and every explanation's, over the network input of ``frame``."""

    frame: InputFrame
    class_maps: np.ndarray  # (C, h, w)
    explanation_maps: np.ndarray  # (E, h', w')

    def for_class(self, index: int) -> Heatmap:
        return Heatmap(self.class_maps[index], self.frame)

    def for_explanation(self, index: int) -> Heatmap:
        return Heatmap(self.explanation_maps[index], self.frame)

    def peaks_json(self, names: list[str], kept: list[int], predicted: int) -> dict[str, dict[str, list[int]]]:
        """``{name of each kept explanation: {"peak": [x, y]}, ..., "class": {"peak": [x, y]}}`` in image pixels."""
        result = {names[i]: {"peak": list(self.for_explanation(i).peak())} for i in kept}
        result["class"] = {"peak": list(self.for_class(predicted).peak())}
        return result


@dataclass
class Heatmap:
    """One heatmap: ``grid`` (h, w) over the network input of ``frame``; larger is more."""

    grid: np.ndarray
    frame: InputFrame

    def peak(self) -> tuple[int, int]:
        """The maximum, as the image pixel (x, y) it falls on (clamped into the image)."""
        frame = self.frame
        dense = upsample(self.grid, frame.input_width, frame.input_height)
        v, u = np.unravel_index(int(np.argmax(dense)), dense.shape)
        x, y = frame.to_image(u + 0.5, v + 0.5)
        return (
            int(min(max(np.floor(x), 0), frame.image_width - 1)),
            int(min(max(np.floor(y), 0), frame.image_height - 1)),
        )

    def on_image(self, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The heatmap in image pixels, scaled to [0, 1], and a mask of the pixels the input covers.

        ``max_side`` bounds the returned size (the image's own size scaled down, aspect kept)."""
        frame = self.frame
        scale = 1.0 if max_side is None else min(1.0, max_side / max(frame.image_width, frame.image_height))
        width, height = max(1, round(frame.image_width * scale)), max(1, round(frame.image_height * scale))
        xs = (np.arange(width) + 0.5) / scale
        ys = (np.arange(height) + 0.5) / scale
        us, vs = (xs - frame.x0) / frame.sx, (ys - frame.y0) / frame.sy
        gh, gw = self.grid.shape
        gx = us * gw / frame.input_width - 0.5  # grid coordinates, cell centres at integers
        gy = vs * gh / frame.input_height - 0.5
        inside_x = (us >= 0) & (us < frame.input_width)
        inside_y = (vs >= 0) & (vs < frame.input_height)
        x0 = np.clip(np.floor(gx).astype(int), 0, gw - 1)
        y0 = np.clip(np.floor(gy).astype(int), 0, gh - 1)
        x1, y1 = np.clip(x0 + 1, 0, gw - 1), np.clip(y0 + 1, 0, gh - 1)
        wx = np.clip(gx - x0, 0.0, 1.0)[None, :]
        wy = np.clip(gy - y0, 0.0, 1.0)[:, None]
        g = self.grid.astype(np.float32)
        top = g[y0][:, x0] * (1 - wx) + g[y0][:, x1] * wx
        bottom = g[y1][:, x0] * (1 - wx) + g[y1][:, x1] * wx
        dense = top * (1 - wy) + bottom * wy
        low, high = float(g.min()), float(g.max())
        dense = (dense - low) / (high - low) if high > low else np.zeros_like(dense)
        mask = inside_y[:, None] & inside_x[None, :]
        return np.where(mask, dense, 0.0).astype(np.float32), mask


def _colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8, black through purple and orange to pale yellow (inferno's ramp: ordered in lightness,
    so the peak is the brightest colour whatever the photo's own colours)."""
    stops = np.array(
        [[0.0, 0, 0, 4], [0.35, 120, 28, 109], [0.65, 237, 105, 37], [0.85, 250, 193, 39], [1.0, 252, 255, 164]]
    )
    channels = [np.interp(values, stops[:, 0], stops[:, k]) for k in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


_RAMP = _colormap(np.linspace(0.0, 1.0, 256))  # (256, 3): the ramp looked up per level, not interpolated per pixel


def _grey_levels(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8), mode="L")


def overlay(image: Image.Image, heatmap: Heatmap, max_side: int = 512, alpha: float = 0.7) -> Image.Image:
    """The image (scaled so its longer side is at most ``max_side``) under the heatmap's colours, with the peak
    marked by a ring; pixels outside the network's input stay as they are, greyed.

    The blends run in Pillow on 8-bit layers (about half the time of float arrays: the app draws two per image)."""
    from PIL import ImageChops, ImageDraw

    rgb = image.convert("RGB")
    scale = min(1.0, max_side / max(rgb.size))
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    base = rgb.resize(size, Image.Resampling.BILINEAR) if size != rgb.size else rgb
    values, mask = heatmap.on_image(max(size))
    values, mask = values[: size[1], : size[0]], mask[: size[1], : size[0]]
    colours = Image.fromarray(_RAMP[np.rint(values * 255).astype(np.uint8)], mode="RGB")
    dim = _grey_levels(255 * (0.45 + 0.55 * values))  # what the map does not point at recedes
    dimmed = ImageChops.multiply(base, Image.merge("RGB", (dim, dim, dim)))
    inside = Image.composite(colours, dimmed, _grey_levels(255 * alpha * values * mask))
    grey = base.convert("L", matrix=(1 / 3, 1 / 3, 1 / 3, 0)).point(lambda level: level * 0.6 + 255 * 0.4)
    picture = Image.composite(inside, Image.merge("RGB", (grey, grey, grey)), _grey_levels(255 * mask))
    x, y = heatmap.peak()
    cx, cy, r = x * scale, y * scale, max(4.0, 0.03 * max(size))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255), width=3)
    draw.ellipse((cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2), outline=(0, 0, 0), width=1)
    return picture


def peaks(maps: torch.Tensor, width: int, height: int) -> np.ndarray:
    """The maxima of (K, h, w) maps upsampled bilinearly to (height, width): (K, 2) of x, y in input pixels (the
    centre of the pixel that holds the maximum)."""
    if len(maps) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    dense = torch.nn.functional.interpolate(maps[None].float(), size=(height, width), mode="bilinear")[0]
    flat = dense.flatten(1).argmax(1).cpu().numpy()
    return np.stack([flat % width + 0.5, flat // width + 0.5], axis=1).astype(np.float32)


def pointing(
    maps: torch.Tensor,
    kept: np.ndarray,
    points: np.ndarray,
    point_regions: list[int] | tuple[int, ...],
    routes: list[list[int]],
    boxes: np.ndarray,
    input_size: tuple[int, int],
    radius: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Does each kept explanation's heatmap peak on the part it names?

    ``maps`` (N, E, h, w) over inputs of ``input_size`` (height, width); ``kept`` (N, E); ``points`` (N, P, 3) of x,
    y, visible in input pixels, point p belonging to region ``point_regions[p]``; ``routes[e]``: the regions
    explanation e describes (empty: the whole bird, not counted); ``boxes`` (N, 4) of x, y, width, height.
    A hit: the peak lies within ``radius`` x sqrt(box area) of a visible point of one of its regions. Explanations
    whose regions have no visible point in a photo are not counted. Returns (hits (E,), counted (E,))."""
    height, width = input_size
    hits, counted = np.zeros(maps.shape[1], dtype=np.int64), np.zeros(maps.shape[1], dtype=np.int64)
    region_of = np.asarray(point_regions)
    for n in range(len(maps)):
        wanted = [e for e in np.flatnonzero(kept[n]) if routes[e]]
        if not wanted:
            continue
        found = peaks(maps[n, wanted], width, height)
        reach = radius * float(np.sqrt(max(boxes[n, 2] * boxes[n, 3], 0.0)))
        for (x, y), e in zip(found, wanted, strict=True):
            near = (points[n, :, 2] > 0) & np.isin(region_of, routes[e])
            if not near.any():
                continue
            distance = np.hypot(points[n, near, 0] - x, points[n, near, 1] - y)
            counted[e] += 1
            hits[e] += bool((distance <= reach).any())
    return hits, counted


@dataclass
class MapRows:
    """What :func:`collect_maps` gathers over a labelled set: probabilities, part points and boxes in input pixels,
    every explanation's map and the predicted class's map, batch by batch (maps differ in size between batches of
    whole photos)."""

    class_probs: list[np.ndarray]
    explanation_probs: list[np.ndarray]
    classes: list[np.ndarray]
    points: list[np.ndarray]
    boxes: list[np.ndarray]
    explanation_maps: list[torch.Tensor]
    class_maps: list[torch.Tensor]
    input_sizes: list[tuple[int, int]]

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.class_probs), np.concatenate(self.explanation_probs), np.concatenate(self.classes)


@torch.no_grad()
def collect_maps(pair: torch.nn.Module, batches, device: str | torch.device = "cpu") -> MapRows:
    """Run ``pair.forward_maps`` over batches of (images, classes, points, boxes) (see
    :class:`explainer.birds.cub.CubPartImages`)."""
    rows = MapRows([], [], [], [], [], [], [], [])
    pair.eval().to(device)
    for images, classes, points, boxes in batches:
        outputs = pair.forward_maps(images.to(device).to(memory_format=torch.channels_last))
        logits, expl, class_maps, expl_maps = (t.float().cpu() for t in outputs)
        probs = torch.softmax(logits, 1)
        rows.class_probs.append(probs.numpy())
        rows.explanation_probs.append(torch.sigmoid(expl).numpy())
        rows.classes.append(np.asarray(classes))
        rows.points.append(points.numpy())
        rows.boxes.append(boxes.numpy())
        rows.explanation_maps.append(expl_maps)
        rows.class_maps.append(class_maps[torch.arange(len(images)), probs.argmax(1)])
        rows.input_sizes.append((int(images.shape[-2]), int(images.shape[-1])))
    return rows


def pointing_by_group(
    rows: MapRows,
    threshold: float,
    routes: list[list[int]],
    point_regions: list[int],
    attribute_names: list[str],
    radius: float = 0.15,
) -> dict[str, object]:
    """:func:`pointing` over collected rows, for the explanation maps and, as the baseline, the predicted class's
    map at the same kept explanations; totals and per attribute group (the part of a raw name before ``::``)."""
    n = len(attribute_names)
    hits, baseline, counted = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int)
    for k, expl_maps in enumerate(rows.explanation_maps):
        kept = rows.explanation_probs[k] >= threshold
        args = (rows.points[k], point_regions, routes, rows.boxes[k], rows.input_sizes[k], radius)
        h, c = pointing(expl_maps, kept, *args)
        hits += h
        counted += c
        baseline += pointing(rows.class_maps[k][:, None].expand(-1, n, -1, -1), kept, *args)[0]
    groups: dict[str, list[int]] = {}
    for a, raw in enumerate(attribute_names):
        groups.setdefault(raw.split("::")[0].removeprefix("has_"), []).append(a)
    by_group = {
        name: {
            "mirror": int(hits[idx].sum()),
            "class_map": int(baseline[idx].sum()),
            "counted": int(counted[idx].sum()),
        }
        for name, idx in groups.items()
        if counted[idx].sum() > 0
    }
    total = max(int(counted.sum()), 1)
    return {
        "mirror": float(hits.sum() / total),
        "class_map": float(baseline.sum() / total),
        "counted": int(counted.sum()),
        "threshold": float(threshold),
        "radius": radius,
        "by_group": by_group,
    }
