"""CUB-200-2011 reader: classes, the 312 attributes (our explanations), image records, splits and a torch Dataset.

Layout accepted (the official archive's): `<root>/CUB_200_2011/{images.txt, image_class_labels.txt,
train_test_split.txt, classes.txt, bounding_boxes.txt?, images/, attributes/}`, with `attributes.txt` either in
`CUB_200_2011/attributes/` (as the dataset README says) or next to `CUB_200_2011/` (where the released archive
puts it). `root` may be the folder containing `CUB_200_2011/` or that folder itself.

Scales: `CubMetadata.class_attributes` is in PERCENT (0..100, as in `class_attribute_labels_continuous.txt`);
`CubMetadata.class_attributes_unit` is the same matrix in [0, 1].

Indices: classes and attributes are 0-based everywhere in this module (official ids minus one); images are addressed
by their position in `images.txt` (`CubMetadata.images[i]`), and `CubImageRecord.image_id` keeps the official id.

This module only reads a folder on disk; downloading the archive is `train/cub_download.py`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from explainer.inputs.imagecheck import ImageError
from explainer.inputs.transforms import load_rgb

from .names import SPECIES_NAMES

CUB_FOLDER = "CUB_200_2011"
CERTAINTY_NOT_VISIBLE = 1
CERTAINTY_NAMES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
TARGET_MODES = ("image", "class")


class CubDataError(ValueError):
    """A CUB file that is missing, malformed, or inconsistent with another; the message names the file."""


@dataclass(frozen=True)
class CubImageRecord:
    """One line of images.txt joined with its class label, split flag and (if present) bounding box."""

    image_id: int
    relative_path: str
    class_index: int
    is_train: bool


@dataclass(frozen=True)
class ExplanationTargets:
    """Per-image 0/1 explanation labels (N, A) float32, and a mask (N, A) float32 (1 = known) or None if all known."""

    labels: np.ndarray
    mask: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        if self.mask is not None and self.mask.shape != self.labels.shape:
            raise ValueError(f"mask shape {self.mask.shape} differs from labels shape {self.labels.shape}")


@dataclass
class CubMetadata:
    """Everything read from a CUB folder. Arrays are row-aligned with `images` (images.txt order)."""

    root: Path
    class_raw_names: tuple[str, ...]
    class_names: tuple[str, ...]
    attribute_raw_names: tuple[str, ...]
    attribute_groups: tuple[str, ...]
    attribute_values: tuple[str, ...]
    attribute_display_names: tuple[str, ...]
    group_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    class_attributes: np.ndarray
    images: tuple[CubImageRecord, ...]
    bounding_boxes: np.ndarray | None = None
    image_attributes: np.ndarray | None = None
    image_attribute_certainties: np.ndarray | None = None
    not_visible_as_unknown: bool = False
    notice: str | None = None
    attributes_file: Path | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_raw_names)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def class_attributes_unit(self) -> np.ndarray:
        """The class-attribute matrix in [0, 1] (the file's percentages divided by 100)."""
        return self.class_attributes / np.float32(100.0)

    @property
    def class_indices(self) -> np.ndarray:
        return np.array([record.class_index for record in self.images], dtype=np.int64)

    @property
    def train_indices(self) -> np.ndarray:
        """Positions of the official training images (train_test_split.txt value 1)."""
        return np.array([i for i, record in enumerate(self.images) if record.is_train], dtype=np.int64)

    @property
    def test_indices(self) -> np.ndarray:
        """Positions of the official test images (train_test_split.txt value 0)."""
        return np.array([i for i, record in enumerate(self.images) if not record.is_train], dtype=np.int64)

    def image_path(self, position: int) -> Path:
        return self.images_dir / self.images[position].relative_path

    def missing_images(self, positions: Sequence[int] | np.ndarray | None = None) -> list[tuple[int, Path]]:
        """(official id, path) of every listed image file that does not exist."""
        selected = range(len(self.images)) if positions is None else positions
        return [
            (self.images[int(i)].image_id, self.image_path(int(i)))
            for i in selected
            if not self.image_path(int(i)).is_file()
        ]


# ---------------------------------------------------------------------------------------------------------- reading


def resolve_cub_folder(root: str | Path) -> Path:
    """Accept the folder containing CUB_200_2011/ or CUB_200_2011/ itself; return the latter."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CubDataError(f"CUB folder {root} does not exist or is not a folder")
    if (root / CUB_FOLDER / "images.txt").is_file():
        return root / CUB_FOLDER
    if (root / "images.txt").is_file():
        return root
    raise CubDataError(
        f"{root} is not a CUB-200-2011 folder: expected {root / CUB_FOLDER / 'images.txt'} or {root / 'images.txt'}"
    )


def _read_rows(path: Path, min_fields: int, max_fields: int | None = None) -> list[list[str]]:
    """Split a whitespace-separated file into rows, checking the field count and naming file:line on error."""
    if not path.is_file():
        raise CubDataError(f"{path.name} is missing (looked for {path})")
    rows = []
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
                expected = f"{min_fields}" if max_fields == min_fields else f"at least {min_fields}"
                raise CubDataError(f"{path.name} line {line_number}: expected {expected} fields, got {line.strip()!r}")
            rows.append(fields)
    if not rows:
        raise CubDataError(f"{path.name} is empty ({path})")
    return rows


def _to_int(path: Path, row_number: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CubDataError(f"{path.name} line {row_number}: {text!r} is not an integer") from None


def _id_column_map(path: Path, rows: list[list[str]], image_ids: list[int], what: str) -> dict[int, list[str]]:
    """Map image id -> remaining fields of a per-image file, checking it lists exactly the images of images.txt."""
    if len(rows) != len(image_ids):
        raise CubDataError(f"images.txt has {len(image_ids)} lines but {path.name} has {len(rows)} ({what})")
    by_id: dict[int, list[str]] = {}
    for row_number, row in enumerate(rows, start=1):
        image_id = _to_int(path, row_number, row[0])
        if image_id in by_id:
            raise CubDataError(f"{path.name} line {row_number}: image id {image_id} appears twice")
        by_id[image_id] = row[1:]
    missing = [image_id for image_id in image_ids if image_id not in by_id]
    if missing:
        raise CubDataError(
            f"{path.name} has no line for image id {missing[0]} ({len(missing)} ids of images.txt missing)"
        )
    return by_id


def _humanise(text: str) -> str:
    return " ".join(text.replace("_", " ").split())


def _class_display_name(raw: str) -> str:
    """The species' English name for an official folder ('022.Chuck_will_Widow' -> "Chuck-will's-widow"); any other
    folder name humanised ('006.Fixture_bird_6' -> 'Fixture bird 6')."""
    if raw in SPECIES_NAMES:
        return SPECIES_NAMES[raw]
    prefix, dot, rest = raw.partition(".")
    return _humanise(rest if dot and prefix.isdigit() else raw)


def _split_attribute(raw: str) -> tuple[str, str]:
    """'has_bill_shape::dagger' -> ('bill shape', 'dagger')."""
    group, sep, value = raw.partition("::")
    if not sep:
        return _humanise(raw), _humanise(raw)
    if group.startswith("has_"):
        group = group[len("has_") :]
    return _humanise(group), _humanise(value)


def _find_attributes_file(cub: Path) -> Path:
    candidates = [cub / "attributes" / "attributes.txt", cub.parent / "attributes.txt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CubDataError(
        f"attributes.txt is missing: looked in {candidates[0]} (dataset README) and {candidates[1]} (next to "
        f"{CUB_FOLDER}/, where the official archive puts it)"
    )


def _read_classes(cub: Path) -> tuple[str, ...]:
    path = cub / "classes.txt"
    rows = _read_rows(path, 2, 2)
    names = []
    for row_number, (class_id, raw_name) in enumerate(rows, start=1):
        if _to_int(path, row_number, class_id) != row_number:
            raise CubDataError(
                f"classes.txt line {row_number}: class id {class_id} is out of order (expected {row_number})"
            )
        names.append(raw_name)
    return tuple(names)


def _read_attribute_names(path: Path) -> tuple[str, ...]:
    rows = _read_rows(path, 2, 2)
    names = []
    for row_number, (attribute_id, raw_name) in enumerate(rows, start=1):
        if _to_int(path, row_number, attribute_id) != row_number:
            raise CubDataError(f"{path.name} line {row_number}: attribute id {attribute_id} is out of order")
        names.append(raw_name)
    return tuple(names)


def _read_class_attributes(cub: Path, num_classes: int, num_attributes: int) -> np.ndarray:
    path = cub / "attributes" / "class_attribute_labels_continuous.txt"
    rows = _read_rows(path, 1)
    if len(rows) != num_classes or any(len(row) != num_attributes for row in rows):
        widths = sorted({len(row) for row in rows})
        raise CubDataError(
            f"{path.name} is {len(rows)} rows x {widths} columns; expected {num_classes} rows (classes.txt) x "
            f"{num_attributes} columns (attributes.txt)"
        )
    try:
        matrix = np.array(rows, dtype=np.float32)
    except ValueError as error:
        raise CubDataError(f"{path.name}: non-numeric value ({error})") from None
    if not np.isfinite(matrix).all() or matrix.min() < 0 or matrix.max() > 100:
        raise CubDataError(f"{path.name}: values must be percentages in [0, 100], got [{matrix.min()}, {matrix.max()}]")
    return matrix


def _read_image_attribute_labels(
    path: Path, image_ids: list[int], num_attributes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parse `<image_id> <attribute_id> <is_present> <certainty_id> <time>` lines into (N, A) arrays.

    Only the first four integers of a line are used: some official lines carry an extra field before the time.
    Certainty 0 in the result means "no line for this image/attribute pair"; a repeated pair keeps its last line.
    """
    position_of = {image_id: position for position, image_id in enumerate(image_ids)}
    present = np.zeros((len(image_ids), num_attributes), dtype=np.uint8)
    certainty = np.zeros((len(image_ids), num_attributes), dtype=np.uint8)
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split(None, 4)
            if not fields:
                continue
            try:
                image_id, attribute_id, is_present, certainty_id = (int(value) for value in fields[:4])
            except ValueError:
                raise CubDataError(
                    f"{path.name} line {line_number}: expected '<image_id> <attribute_id> <is_present> <certainty_id>"
                    f" <time>', got {line.strip()!r}"
                ) from None
            position = position_of.get(image_id)
            if position is None:
                continue  # images outside images.txt (e.g. a subset of the dataset) are ignored
            valid_ids = 1 <= attribute_id <= num_attributes and certainty_id in CERTAINTY_NAMES
            if not valid_ids or is_present not in (0, 1):
                raise CubDataError(
                    f"{path.name} line {line_number}: attribute id must be 1..{num_attributes}, is_present 0/1, "
                    f"certainty 1..4; got {line.strip()!r}"
                )
            present[position, attribute_id - 1] = is_present
            certainty[position, attribute_id - 1] = certainty_id
    return present, certainty


def read_cub(
    root: str | Path, image_level_attributes: bool = True, not_visible_as_unknown: bool = False
) -> CubMetadata:
    """Read a CUB-200-2011 folder (see the module docstring for the accepted layouts).

    image_level_attributes: read attributes/image_attribute_labels.txt when present (slow-ish: 3.7M lines); when it is
    absent, labels fall back to the class level and `notice` says so (the caller should print it).
    not_visible_as_unknown: `explanation_targets` masks image-level labels whose certainty is 1 ("not visible").
    """
    cub = resolve_cub_folder(root)
    image_rows = _read_rows(cub / "images.txt", 2, 2)
    image_ids: list[int] = []
    for row_number, row in enumerate(image_rows, start=1):
        image_ids.append(_to_int(cub / "images.txt", row_number, row[0]))
    if len(set(image_ids)) != len(image_ids):
        duplicate = next(image_id for image_id in image_ids if image_ids.count(image_id) > 1)
        raise CubDataError(f"images.txt lists image id {duplicate} more than once")

    class_raw_names = _read_classes(cub)
    labels_path, split_path = cub / "image_class_labels.txt", cub / "train_test_split.txt"
    labels = _id_column_map(labels_path, _read_rows(labels_path, 2, 2), image_ids, "class labels")
    split = _id_column_map(split_path, _read_rows(split_path, 2, 2), image_ids, "train/test split")

    records = []
    for image_id, (_, relative_path) in zip(image_ids, image_rows, strict=False):
        class_text, is_train = labels[image_id][0], split[image_id][0]
        if not class_text.isdigit() or not 1 <= int(class_text) <= len(class_raw_names):
            raise CubDataError(
                f"image_class_labels.txt: image id {image_id} has class {class_text!r}; classes.txt has classes "
                f"1..{len(class_raw_names)}"
            )
        if is_train not in ("0", "1"):
            raise CubDataError(f"train_test_split.txt: image id {image_id} has {is_train!r}; expected 0 or 1")
        records.append(CubImageRecord(image_id, relative_path, int(class_text) - 1, is_train == "1"))

    boxes = None
    boxes_path = cub / "bounding_boxes.txt"
    if boxes_path.is_file():
        by_id = _id_column_map(boxes_path, _read_rows(boxes_path, 5, 5), image_ids, "bounding boxes")
        try:
            boxes = np.array([by_id[image_id] for image_id in image_ids], dtype=np.float32)
        except ValueError as error:
            raise CubDataError(f"bounding_boxes.txt: non-numeric value ({error})") from None

    attributes_file = _find_attributes_file(cub)
    attribute_raw_names = _read_attribute_names(attributes_file)
    split_names = [_split_attribute(raw) for raw in attribute_raw_names]
    attribute_groups = tuple(group for group, _ in split_names)
    attribute_values = tuple(value for _, value in split_names)
    group_names = tuple(dict.fromkeys(attribute_groups))
    groups = tuple(
        tuple(index for index, group in enumerate(attribute_groups) if group == name) for name in group_names
    )
    class_attributes = _read_class_attributes(cub, len(class_raw_names), len(attribute_raw_names))

    image_attributes = certainties = None
    notice = None
    image_labels_path = cub / "attributes" / "image_attribute_labels.txt"
    if image_level_attributes:
        if image_labels_path.is_file():
            image_attributes, certainties = _read_image_attribute_labels(
                image_labels_path, image_ids, len(attribute_raw_names)
            )
        else:
            notice = (
                f"{image_labels_path} is absent, so explanation labels are CLASS-level: every image gets its "
                f"class's attributes from class_attribute_labels_continuous.txt (present when >= the threshold, "
                f"default 50%), not what annotators saw in that image."
            )

    return CubMetadata(
        root=cub,
        class_raw_names=class_raw_names,
        class_names=tuple(_class_display_name(raw) for raw in class_raw_names),
        attribute_raw_names=attribute_raw_names,
        attribute_groups=attribute_groups,
        attribute_values=attribute_values,
        attribute_display_names=tuple(f"{group}: {value}" for group, value in split_names),
        group_names=group_names,
        groups=groups,
        class_attributes=class_attributes,
        images=tuple(records),
        bounding_boxes=boxes,
        image_attributes=image_attributes,
        image_attribute_certainties=certainties,
        not_visible_as_unknown=not_visible_as_unknown,
        notice=notice,
        attributes_file=attributes_file,
    )


# ---------------------------------------------------------------------------------------------- targets and splits


def explanation_targets(meta: CubMetadata, mode: str = "image", class_threshold: float = 50.0) -> ExplanationTargets:
    """0/1 explanation labels for every image of `meta` (rows in images.txt order).

    mode "image": the per-image annotator labels; pairs without a line, and (if meta.not_visible_as_unknown) pairs
    marked "not visible", get mask 0. Without image-level labels it falls back to "class" (see `meta.notice`;
    the result's `source` says which was used).
    mode "class": an image gets its class's row of the class matrix >= class_threshold percent (the usual
    concept-bottleneck convention); no mask.
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"explanation target mode {mode!r} is not valid; valid: {list(TARGET_MODES)}")
    if not 0.0 <= class_threshold <= 100.0:
        raise ValueError(f"class_threshold is in percent and must be in [0, 100], got {class_threshold}")
    if mode == "image" and meta.image_attributes is not None and meta.image_attribute_certainties is not None:
        labels = meta.image_attributes.astype(np.float32)
        known = meta.image_attribute_certainties > 0
        if meta.not_visible_as_unknown:
            known &= meta.image_attribute_certainties != CERTAINTY_NOT_VISIBLE
        mask = None if known.all() else known.astype(np.float32)
        return ExplanationTargets(labels=labels, mask=mask, source="image")
    class_labels = (meta.class_attributes >= class_threshold).astype(np.float32)
    return ExplanationTargets(labels=class_labels[meta.class_indices], mask=None, source="class")


def validation_split(meta: CubMetadata, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve a class-stratified validation set out of the official training images: (train, validation) positions.

    Each class gives round(fraction * its training images) images, at least 1 and at most all but one.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    generator = np.random.default_rng(seed)
    train_positions = meta.train_indices
    classes = meta.class_indices[train_positions]
    kept, validation = [], []
    for class_index in np.unique(classes):
        members = generator.permutation(train_positions[classes == class_index])
        count = min(max(1, round(fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        validation.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(validation))


# ------------------------------------------------------------------------------------------------------- dataset


class CubImages(Dataset):
    """CUB images -> (image tensor, class index, explanation target float32 (A,)[, mask float32 (A,)]).

    The mask is returned only when `targets.mask` is not None. Only plain arrays and paths are kept, so the dataset
    pickles cheaply into DataLoader workers. Without a transform the image becomes a [0, 1] float tensor at its own
    size (not batchable across sizes).
    """

    def __init__(
        self,
        meta: CubMetadata,
        root: str | Path | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[..., torch.Tensor] | None = None,
        targets: ExplanationTargets | None = None,
        check_files: bool = True,
    ) -> None:
        images_dir = meta.images_dir if root is None else resolve_cub_folder(root) / "images"
        positions = np.arange(len(meta.images)) if indices is None else np.asarray(indices, dtype=np.int64)
        if positions.ndim != 1 or (positions.size and (positions.min() < 0 or positions.max() >= len(meta.images))):
            raise ValueError(f"indices must be positions 0..{len(meta.images) - 1} into meta.images")
        targets = explanation_targets(meta) if targets is None else targets
        if targets.labels.shape != (len(meta.images), meta.num_attributes):
            raise ValueError(
                f"targets.labels has shape {targets.labels.shape}; expected {(len(meta.images), meta.num_attributes)}"
            )
        self.images_dir = images_dir
        self.image_ids = [meta.images[i].image_id for i in positions]
        self.relative_paths = [meta.images[i].relative_path for i in positions]
        self.class_indices = [meta.images[i].class_index for i in positions]
        self.labels = np.ascontiguousarray(targets.labels[positions], dtype=np.float32)
        self.mask = None if targets.mask is None else np.ascontiguousarray(targets.mask[positions], dtype=np.float32)
        self.transform = transform
        if check_files:
            missing = [
                (image_id, images_dir / path)
                for image_id, path in zip(self.image_ids, self.relative_paths, strict=False)
                if not (images_dir / path).is_file()
            ]
            if missing:
                image_id, path = missing[0]
                raise CubDataError(f"image id {image_id}: {path} does not exist ({len(missing)} listed images missing)")

    def __len__(self) -> int:
        return len(self.relative_paths)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, ...] | tuple[torch.Tensor, int, torch.Tensor]:
        path = self.images_dir / self.relative_paths[item]
        try:
            image = load_rgb(path)
        except ImageError as error:
            raise CubDataError(f"image id {self.image_ids[item]}: {error}") from error
        tensor = self.transform(image) if self.transform is not None else TF.to_tensor(image)
        target = torch.from_numpy(self.labels[item])
        if self.mask is None:
            return tensor, self.class_indices[item], target
        return tensor, self.class_indices[item], target, torch.from_numpy(self.mask[item])


# ------------------------------------------------------------------------------------------------------- parts

# The official part ids 1..15 (parts/parts.txt), and the body regions a mirror attends to: a bird's left and right
# eye, leg and wing are one region each, since a mirrored photo swaps them and no attribute tells them apart.
PART_NAMES = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape", "right eye",
    "right leg", "right wing", "tail", "throat",
)  # fmt: skip
REGIONS = ("back", "beak", "belly", "breast", "crown", "forehead", "eye", "leg", "wing", "nape", "tail", "throat")
PART_REGION = tuple(REGIONS.index(name.removeprefix("left ").removeprefix("right ")) for name in PART_NAMES)
# The body parts each attribute group describes (official part ids; empty: the whole bird: size, shape, colour).
GROUP_PARTS: dict[str, tuple[int, ...]] = {
    "has_bill_shape": (2,), "has_wing_color": (9, 13), "has_upperparts_color": (1, 10),
    "has_underparts_color": (3, 4, 15), "has_breast_pattern": (4,), "has_back_color": (1,), "has_tail_shape": (14,),
    "has_upper_tail_color": (14,), "has_head_pattern": (5, 6, 7, 10, 11), "has_breast_color": (4,),
    "has_throat_color": (15,), "has_eye_color": (7, 11), "has_bill_length": (2,), "has_forehead_color": (6,),
    "has_under_tail_color": (14,), "has_nape_color": (10,), "has_belly_color": (3,), "has_wing_shape": (9, 13),
    "has_size": (), "has_shape": (), "has_back_pattern": (1,), "has_tail_pattern": (14,), "has_belly_pattern": (3,),
    "has_primary_color": (), "has_leg_color": (8, 12), "has_bill_color": (2,), "has_crown_color": (5,),
    "has_wing_pattern": (9, 13),
}  # fmt: skip


def group_regions(attribute_raw_names: Sequence[str]) -> list[tuple[int, ...]]:
    """For each attribute (``has_group::value``), the regions (indices into REGIONS) its group describes; () for the
    whole bird and for groups this table does not know."""
    regions = []
    for raw in attribute_raw_names:
        parts = GROUP_PARTS.get(raw.split("::")[0], ())
        regions.append(tuple(sorted({PART_REGION[p - 1] for p in parts})))
    return regions


def _stored_scale(cub: Path, meta: CubMetadata) -> np.ndarray:
    """Per image, stored size / original size (1 where extras/image_sizes.txt is absent: the official photos)."""
    scale = np.ones((len(meta.images), 2))
    sizes = cub.parent / "extras" / "image_sizes.txt"
    if sizes.is_file():
        position = {record.image_id: i for i, record in enumerate(meta.images)}
        for row in _read_rows(sizes, 5, 5):
            i = position.get(int(row[0]))
            if i is not None:
                scale[i] = (float(row[3]) / float(row[1]), float(row[4]) / float(row[2]))
    return scale


def read_part_locations(root: str | Path, meta: CubMetadata) -> np.ndarray:
    """The official part locations in the stored photos' pixels: (images, 15, 3) of x, y, visible (1 or 0).

    Photos without lines (the data set here keeps the test photos' back) and parts not visible are 0, 0, 0.
    """
    cub = resolve_cub_folder(root)
    locations = np.zeros((len(meta.images), len(PART_NAMES), 3), dtype=np.float32)
    path = cub / "parts" / "part_locs.txt"
    if not path.is_file():
        raise CubDataError(f"{path.name} is missing: part locations need the official parts/part_locs.txt")
    scale = _stored_scale(cub, meta)
    position = {record.image_id: i for i, record in enumerate(meta.images)}
    for row in _read_rows(path, 5, 5):
        i, part = position.get(int(row[0])), int(row[1])
        if i is None or not 1 <= part <= len(PART_NAMES) or row[4] != "1":
            continue
        locations[i, part - 1] = (float(row[2]) * scale[i, 0], float(row[3]) * scale[i, 1], 1.0)
    return locations


def read_stored_boxes(root: str | Path, meta: CubMetadata) -> np.ndarray:
    """The official bird boxes in the stored photos' pixels: (images, 4) of x, y, width, height."""
    if meta.bounding_boxes is None:
        raise CubDataError("bounding_boxes.txt is missing: boxes need the official file")
    scale = _stored_scale(resolve_cub_folder(root), meta)
    return (meta.bounding_boxes * np.concatenate([scale, scale], axis=1)).astype(np.float32)


class CubPartImages(Dataset):
    """CUB photos with their part locations and bird box, through a view that says where its input lies:
    (image tensor, class index, points (15, 3) of x, y, visible in input pixels, box (4,) in input pixels).

    ``view(image) -> (tensor, frame, flipped)`` is :class:`explainer.inputs.transforms.TrainView` or ``EvalView``; a
    point outside the input is marked not visible.
    """

    def __init__(
        self,
        meta: CubMetadata,
        positions: Sequence[int] | np.ndarray,
        points: np.ndarray,
        boxes: np.ndarray,
        view: Callable[[Image.Image], tuple[torch.Tensor, Any, bool]],
    ) -> None:
        self.images_dir = meta.images_dir
        self.positions = np.asarray(positions, dtype=np.int64)
        self.paths = [meta.images[i].relative_path for i in self.positions]
        self.classes = [meta.images[i].class_index for i in self.positions]
        self.points, self.boxes = points[self.positions], boxes[self.positions]
        self.view = view

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        tensor, frame, flipped = self.view(load_rgb(self.images_dir / self.paths[item]))
        points = self.points[item].copy()
        points[:, 0], points[:, 1] = frame.to_input(points[:, 0], points[:, 1])
        x, y, w, h = self.boxes[item]
        (bx0, by0), (bx1, by1) = frame.to_input(x, y), frame.to_input(x + w, y + h)
        if flipped:
            points[:, 0] = frame.input_width - points[:, 0]
            bx0, bx1 = frame.input_width - bx1, frame.input_width - bx0
        inside = (points[:, 0] >= 0) & (points[:, 0] < frame.input_width)
        inside &= (points[:, 1] >= 0) & (points[:, 1] < frame.input_height)
        points[:, 2] *= inside
        box = np.array([bx0, by0, bx1 - bx0, by1 - by0], dtype=np.float32)
        return tensor, self.classes[item], torch.from_numpy(points.astype(np.float32)), torch.from_numpy(box)
