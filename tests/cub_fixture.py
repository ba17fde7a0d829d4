"""A tiny, deterministic CUB-200-2011-format folder for tests (no real data needed).

Use: `from cub_fixture import make_cub_fixture; root = make_cub_fixture(tmp_path)`, then `read_cub(root)`.
Images are random 64x48 JPEGs; class folders, ids, file formats and quirks follow the official archive:
`attributes.txt` beside `CUB_200_2011/` (by default), some image_attribute_labels.txt lines with an extra field,
some greyscale images. Image ids are 1..N in class order; within a class, even positions are training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE_SEED = 1234
FIXTURE_IMAGE_SIZE = (64, 48)  # width, height
_CLASS_NAMES = ("Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet")
_GROUPS = (
    ("has_bill_shape", ("curved_(up_or_down)", "dagger", "hooked", "needle", "hooked_seabird", "spatulate")),
    ("has_wing_color", ("blue", "brown", "iridescent", "purple", "rufous", "grey")),
    ("has_size", ("large_(16_-_32_in)", "small_(5_-_9_in)", "very_large_(32_-_72_in)", "medium_(9_-_16_in)")),
)


def fixture_attribute_names(n_attributes: int) -> list[str]:
    """Raw names `has_group::value` split as evenly as possible over the fixture's 3 groups (in group order)."""
    if n_attributes < len(_GROUPS):
        raise ValueError(f"n_attributes must be at least {len(_GROUPS)} (one per group), got {n_attributes}")
    names = []
    for group_index, (group, values) in enumerate(_GROUPS):
        count = n_attributes // len(_GROUPS) + (1 if group_index < n_attributes % len(_GROUPS) else 0)
        names += [f"{group}::{values[k] if k < len(values) else f'value_{k}'}" for k in range(count)]
    return names


def make_cub_fixture(
    tmp: Path,
    n_classes: int = 4,
    n_attributes: int = 12,
    images_per_class: int = 6,
    with_image_attributes: bool = True,
    attributes_next_to_folder: bool = True,
    extra_field_lines: bool = True,
    greyscale_some: bool = True,
) -> Path:
    """Write a CUB-format folder under tmp and return the folder CONTAINING `CUB_200_2011/` (what read_cub takes).

    Class-attribute percentages include exact 50.0 values (to test the >= threshold); image-level labels are drawn
    from them and get random certainties 1..4 (1 = not visible); every 5th line has an extra field when
    extra_field_lines; image ids whose id % 7 == 3 are greyscale when greyscale_some.
    """
    rng = np.random.default_rng(FIXTURE_SEED)
    root = Path(tmp) / "cub_fixture"
    cub = root / "CUB_200_2011"
    (cub / "attributes").mkdir(parents=True, exist_ok=False)
    class_raw_names = [
        f"{c + 1:03d}.{_CLASS_NAMES[c] if c < len(_CLASS_NAMES) else f'Fixture_bird_{c + 1}'}" for c in range(n_classes)
    ]
    (cub / "classes.txt").write_text("".join(f"{c + 1} {name}\n" for c, name in enumerate(class_raw_names)))

    attribute_names = fixture_attribute_names(n_attributes)
    attributes_text = "".join(f"{a + 1} {name}\n" for a, name in enumerate(attribute_names))
    attributes_path = root / "attributes.txt" if attributes_next_to_folder else cub / "attributes" / "attributes.txt"
    attributes_path.write_text(attributes_text)
    (cub / "attributes" / "certainties.txt").write_text("1 not visible\n2 guessing\n3 probably\n4 definitely\n")

    percent = np.round(rng.uniform(0, 100, size=(n_classes, n_attributes)), 4)
    percent[rng.random(percent.shape) < 0.15] = 50.0
    percent[rng.random(percent.shape) < 0.15] = 0.0
    (cub / "attributes" / "class_attribute_labels_continuous.txt").write_text(
        "".join(" ".join(f"{value:.10g}" for value in row) + "\n" for row in percent)
    )

    images, labels, split, boxes, attribute_lines = [], [], [], [], []
    width, height = FIXTURE_IMAGE_SIZE
    image_id = 0
    for c, class_name in enumerate(class_raw_names):
        (cub / "images" / class_name).mkdir(parents=True)
        for j in range(images_per_class):
            image_id += 1
            relative = f"{class_name}/{class_name.split('.', 1)[1]}_{j:04d}_{image_id}.jpg"
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels, "RGB")
            if greyscale_some and image_id % 7 == 3:
                image = image.convert("L")
            image.save(cub / "images" / relative, quality=90)
            images.append(f"{image_id} {relative}\n")
            labels.append(f"{image_id} {c + 1}\n")
            split.append(f"{image_id} {1 if j % 2 == 0 else 0}\n")
            x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
            boxes.append(f"{image_id} {x:.1f} {y:.1f} {width - x - 1:.1f} {height - y - 1:.1f}\n")
            for a in range(n_attributes):
                is_present = int(rng.random() * 100 < percent[c, a])
                certainty = int(rng.integers(1, 5))
                seconds = f"{rng.uniform(1, 30):.3f}"
                if extra_field_lines and len(attribute_lines) % 5 == 4:
                    attribute_lines.append(f"{image_id} {a + 1} {is_present} {certainty} 0 {seconds}\n")
                else:
                    attribute_lines.append(f"{image_id} {a + 1} {is_present} {certainty} {seconds}\n")
    (cub / "images.txt").write_text("".join(images))
    (cub / "image_class_labels.txt").write_text("".join(labels))
    (cub / "train_test_split.txt").write_text("".join(split))
    (cub / "bounding_boxes.txt").write_text("".join(boxes))
    _write_part_locations(cub, boxes, split)
    if with_image_attributes:
        (cub / "attributes" / "image_attribute_labels.txt").write_text("".join(attribute_lines))
    return root


def _write_part_locations(cub: Path, boxes: list[str], split: list[str]) -> None:
    """parts/parts.txt and parts/part_locs.txt for the training photos only (as the shared copy keeps the test
    photos' back): 15 parts each, inside the photo's box, every fourth one not visible (0 0 0). A generator of its
    own, so the rest of the fixture stays as it was."""
    rng = np.random.default_rng(FIXTURE_SEED + 1)
    names = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat")  # fmt: skip
    (cub / "parts").mkdir()
    (cub / "parts" / "parts.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(names)))
    lines = []
    for box_line, split_line in zip(boxes, split, strict=True):
        image_id, x, y, w, h = box_line.split()
        if split_line.split()[1] != "1":
            continue
        for part in range(1, 16):
            if part % 4 == 0:
                lines.append(f"{image_id} {part} 0.0 0.0 0\n")
            else:
                px, py = float(x) + rng.uniform(0, float(w)), float(y) + rng.uniform(0, float(h))
                lines.append(f"{image_id} {part} {px:.1f} {py:.1f} 1\n")
    (cub / "parts" / "part_locs.txt").write_text("".join(lines))
