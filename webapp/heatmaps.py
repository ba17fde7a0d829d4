"""The "Where" panel's pictures and words: the image under the heatmap of one explanation or of the predicted class.

The maps come from the same pass of the networks as the probabilities (:meth:`Explainer.where_tensor`). What the
panel needs afterwards (another explanation chosen, a slider moved) is cached with the probabilities, and is small:
every explanation's map and the predicted class's, each scaled to [0, 1] in float16 (the birds pair: 312 maps of
9 x 9, 50 KB), and the image as a JPEG thumbnail :data:`PICTURE_SIDE` pixels on its longer side (20 to 40 KB) with the
network input's frame over it. So choosing another explanation redraws one picture, no session keeps its full-size
image, and no network runs again.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any, Mapping

import numpy as np
from PIL import Image

from explainer.inputs.transforms import to_rgb
from explainer.verdict.where import Heatmap, InputFrame, Where, overlay

PICTURE_SIDE = 384  # the pictures' longer side: two side by side in the results column, one across a phone
JPEG_QUALITY = 90


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map of ``maps`` scaled to [0, 1] (a flat map to 0), as float16: the pictures show maps scaled
    like this anyway, and half the bytes of float32 are enough for a colour ramp."""
    maps = np.asarray(maps, dtype=np.float32)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    scaled = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
    return scaled.astype(np.float16)


def pack(where: Where, predicted_class: int, image: Image.Image, side: int = PICTURE_SIDE) -> dict[str, Any]:
    """What the panel keeps of one image: the thumbnail (JPEG bytes), its frame, the predicted class's map and every
    explanation's map. The thumbnail's longer side is ``side``, a small image enlarged too (a 64 px example would
    otherwise be a stamp beside a full-width picture)."""
    rgb = to_rgb(image)
    scale = side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    thumbnail = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0) if size != rgb.size else rgb
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {
        "picture": buffer.getvalue(),
        "frame": asdict(where.frame.resized(*size)),
        "class_map": _unit(where.class_maps[predicted_class]),
        "explanation_maps": _unit(where.explanation_maps),
    }


def picture(packed: Mapping[str, Any], grid: np.ndarray) -> Image.Image:
    """The cached thumbnail under one cached map (see :func:`explainer.verdict.where.overlay`)."""
    with Image.open(io.BytesIO(packed["picture"])) as opened:
        base = opened.convert("RGB")
    heatmap = Heatmap(np.asarray(grid, dtype=np.float32), InputFrame(**packed["frame"]))
    return overlay(base, heatmap, max_side=max(base.size))


def is_flat(grid: np.ndarray) -> bool:
    """A map that is the same everywhere (a 1 x 1 grid, or all terms equal) says nothing about where: no picture."""
    return not np.any(np.asarray(grid) > 0)


def _grid(grid: np.ndarray) -> str:
    height, width = np.shape(grid)
    return f"a {height} × {width} grid"


def _flat(grid: np.ndarray) -> str:
    return f"Its map is the same everywhere (read on {_grid(grid)}), so it does not show where; no picture."


def explanation_caption(name: str, grid: np.ndarray, kept: bool = True) -> str:
    """Title and one line under the explanation's picture."""
    note = "" if kept else " (not kept: below the threshold or switched off)"
    if is_flat(grid):
        return f"**Where '{name}' looks**{note}  \n{_flat(grid)}"
    return (
        f"**Where '{name}' looks**{note}  \nBrighter = more of this explanation's score comes from there (read on "
        f"{_grid(grid)}); the ring marks the peak."
    )


def class_caption(name: str, grid: np.ndarray) -> str:
    """Title and one line under the predicted class's picture."""
    if is_flat(grid):
        return f"**Where '{name}' is seen**  \n{_flat(grid)}"
    return (
        f"**Where '{name}' is seen**  \nBrighter = more of the main network's score for it comes from there (read on "
        f"{_grid(grid)}); greyed = outside what the network sees."
    )


def nothing_kept(threshold: float) -> str:
    """What the explanation's side says when no explanation is kept."""
    return (
        f"**No explanation is kept** at threshold {threshold:.2f}, so there is no explanation heatmap to show. "
        "Lower the threshold (Controls) to see where the strongest ones look."
    )


PANEL_TITLE = "Where the networks look"


def panel_update(not_the_subject: str | None) -> dict[str, Any]:
    """The panel open, or folded when the image is not what the model is for (``not_the_subject``: e.g. "a bird"):
    its heatmaps would show where a bird model looks in a photo of something else."""
    if not_the_subject:
        return {"__type__": "update", "open": False, "label": f"{PANEL_TITLE} (folded: this is not {not_the_subject})"}
    return {"__type__": "update", "open": True, "label": PANEL_TITLE}
