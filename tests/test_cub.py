"""Tests for the birds data side: explainer.birds.cub (reader, targets, splits, Dataset), train.cub_download,
explainer.inputs.transforms."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from cub_fixture import FIXTURE_IMAGE_SIZE, make_cub_fixture
from explainer.birds.cub import (
    CubDataError,
    CubImages,
    explanation_targets,
    read_cub,
    validation_split,
)
from explainer.inputs.imagecheck import ImageError
from explainer.inputs.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformConfigError,
    birds_train_transform,
    build_transform,
    load_rgb,
    reference_preprocessing,
)
from train.cub_download import CubChecksumError, CubDownloadError, download_cub, verify_and_extract


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cub_fixture(tmp_path_factory.mktemp("cub"))


def _attribute_lines(root: Path) -> list[list[str]]:
    text = (root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").read_text()
    return [line.split() for line in text.splitlines()]


# ------------------------------------------------------------------------------------------------------- reader


def test_reader_reads_names_groups_matrix_and_records(cub_root: Path) -> None:
    meta = read_cub(cub_root)
    assert meta.class_raw_names[0] == "001.Black_footed_Albatross"
    assert meta.class_names[:2] == ("Black-footed Albatross", "Laysan Albatross")
    assert meta.attribute_raw_names[0] == "has_bill_shape::curved_(up_or_down)"
    assert meta.attribute_display_names[0] == "bill shape: curved (up or down)"
    assert meta.attribute_display_names[8] == "size: large (16 - 32 in)"
    assert meta.group_names == ("bill shape", "wing color", "size")
    assert meta.groups == ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11))
    assert meta.class_attributes.shape == (4, 12) and meta.class_attributes.dtype == np.float32
    assert 0 <= meta.class_attributes.min() and meta.class_attributes.max() <= 100
    np.testing.assert_allclose(meta.class_attributes_unit * 100, meta.class_attributes, rtol=1e-6)
    assert len(meta.images) == 24 and meta.images[0].image_id == 1 and meta.images[0].class_index == 0
    assert meta.images[23].class_index == 3 and meta.images[23].relative_path.startswith("004.Groove_billed_Ani/")
    assert len(meta.train_indices) == 12 and len(meta.test_indices) == 12
    assert set(meta.train_indices) | set(meta.test_indices) == set(range(24))
    assert meta.bounding_boxes is not None and meta.bounding_boxes.shape == (24, 4)
    assert meta.notice is None and meta.image_attributes is not None and meta.image_attributes.shape == (24, 12)
    assert meta.attributes_file == cub_root / "attributes.txt"


def test_reader_accepts_the_cub_folder_itself_and_attributes_inside(tmp_path: Path) -> None:
    root = make_cub_fixture(tmp_path, attributes_next_to_folder=False)
    meta = read_cub(root / "CUB_200_2011")
    assert meta.attributes_file == root / "CUB_200_2011" / "attributes" / "attributes.txt"
    assert meta.num_attributes == 12


def test_missing_attributes_file_names_both_places(tmp_path: Path) -> None:
    root = make_cub_fixture(tmp_path)
    (root / "attributes.txt").unlink()
    with pytest.raises(CubDataError) as error:
        read_cub(root)
    assert str(root / "attributes.txt") in str(error.value)
    assert str(root / "CUB_200_2011" / "attributes" / "attributes.txt") in str(error.value)


def test_lines_with_an_extra_field_are_parsed_by_their_first_four_ints(cub_root: Path) -> None:
    meta = read_cub(cub_root)
    lines = _attribute_lines(cub_root)
    long_lines = [fields for fields in lines if len(fields) == 6]
    assert len(long_lines) >= 10  # the fixture really has such lines
    assert meta.image_attributes is not None and meta.image_attribute_certainties is not None
    for fields in lines:
        image_id, attribute_id, is_present, certainty = (int(value) for value in fields[:4])
        assert meta.image_attributes[image_id - 1, attribute_id - 1] == is_present
        assert meta.image_attribute_certainties[image_id - 1, attribute_id - 1] == certainty


def test_image_targets_and_not_visible_mask(cub_root: Path) -> None:
    plain = explanation_targets(read_cub(cub_root), "image")
    assert plain.source == "image" and plain.mask is None and plain.labels.dtype == np.float32
    masked_meta = read_cub(cub_root, not_visible_as_unknown=True)
    masked = explanation_targets(masked_meta, "image")
    assert masked.mask is not None and masked.mask.dtype == np.float32
    np.testing.assert_array_equal(masked.mask == 0, masked_meta.image_attribute_certainties == 1)
    assert 0 < masked.mask.mean() < 1
    np.testing.assert_array_equal(masked.labels, plain.labels)


def test_missing_pair_gets_mask_zero(tmp_path: Path) -> None:
    root = make_cub_fixture(tmp_path)
    path = root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    lines = path.read_text().splitlines(keepends=True)
    removed = lines.pop(5).split()
    path.write_text("".join(lines))
    targets = explanation_targets(read_cub(root), "image")
    assert targets.mask is not None and targets.mask.sum() == targets.mask.size - 1
    assert targets.mask[int(removed[0]) - 1, int(removed[1]) - 1] == 0


def test_class_targets_use_threshold_inclusive(cub_root: Path) -> None:
    meta = read_cub(cub_root)
    assert (meta.class_attributes == 50.0).any()  # the fixture has exact-threshold values
    targets = explanation_targets(meta, "class", class_threshold=50.0)
    assert targets.source == "class" and targets.mask is None
    for position, record in enumerate(meta.images):
        np.testing.assert_array_equal(targets.labels[position], meta.class_attributes[record.class_index] >= 50.0)
    with pytest.raises(ValueError, match="'pixel'.*valid"):
        explanation_targets(meta, "pixel")
    with pytest.raises(ValueError, match="percent"):
        explanation_targets(meta, "class", class_threshold=0.5 * 300)


def test_without_image_labels_falls_back_to_class_level_with_a_notice(tmp_path: Path) -> None:
    meta = read_cub(make_cub_fixture(tmp_path, with_image_attributes=False))
    assert meta.notice is not None and "image_attribute_labels.txt is absent" in meta.notice
    assert "CLASS-level" in meta.notice
    targets = explanation_targets(meta, "image")
    assert targets.source == "class"
    np.testing.assert_array_equal(targets.labels, explanation_targets(meta, "class").labels)
    assert read_cub(tmp_path / "cub_fixture", image_level_attributes=False).notice is None


# ------------------------------------------------------------------------------------------------------- errors


def _corrupt(tmp_path: Path, name: str, edit) -> Path:
    root = make_cub_fixture(tmp_path)
    path = root / "CUB_200_2011" / name
    path.write_text(edit(path.read_text()))
    return root


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    root = _corrupt(tmp_path, "image_class_labels.txt", lambda text: "".join(text.splitlines(True)[:-1]))
    with pytest.raises(CubDataError, match="images.txt has 24 lines but image_class_labels.txt has 23"):
        read_cub(root)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("train_test_split.txt", lambda t: t.replace("3 1\n", "3 2\n", 1), "image id 3 has '2'; expected 0 or 1"),
        ("image_class_labels.txt", lambda t: t.replace("2 1\n", "2 9\n", 1), "image id 2 has class '9'"),
        ("image_class_labels.txt", lambda t: t.replace("2 1\n", "99 1\n", 1), "has no line for image id 2"),
        ("images.txt", lambda t: t.replace("\n", " extra\n", 1), "images.txt line 1: expected 2 fields"),
        ("classes.txt", lambda t: t.replace("2 002", "7 002", 1), "classes.txt line 2: class id 7 is out of order"),
        (
            "attributes/class_attribute_labels_continuous.txt",
            lambda t: t.split("\n", 1)[1],
            "class_attribute_labels_continuous.txt is 3 rows",
        ),
    ],
)
def test_inconsistent_files_raise_naming_the_file(tmp_path: Path, name: str, edit, message: str) -> None:
    with pytest.raises(CubDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_cub(_corrupt(tmp_path, name, edit))


def test_missing_required_file_and_wrong_root(tmp_path: Path) -> None:
    root = make_cub_fixture(tmp_path)
    (root / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(CubDataError, match="classes.txt is missing"):
        read_cub(root)
    with pytest.raises(CubDataError, match="not a CUB-200-2011 folder"):
        read_cub(tmp_path)
    with pytest.raises(CubDataError, match="does not exist"):
        read_cub(tmp_path / "nowhere")


def test_missing_image_is_reported_with_its_id(tmp_path: Path) -> None:
    root = make_cub_fixture(tmp_path)
    meta = read_cub(root)
    meta.image_path(4).unlink()
    assert meta.missing_images() == [(5, meta.image_path(4))]
    with pytest.raises(CubDataError, match="image id 5: .* does not exist"):
        CubImages(meta)
    unchecked = CubImages(meta, check_files=False)
    with pytest.raises(CubDataError, match="image id 5: .*no such file"):
        unchecked[4]


# ------------------------------------------------------------------------------------------------- splits, dataset


def test_validation_split_is_stratified_disjoint_and_seeded(cub_root: Path) -> None:
    meta = read_cub(cub_root)
    train, validation = validation_split(meta, fraction=0.34, seed=3)
    assert set(train).isdisjoint(validation)
    assert sorted(set(train) | set(validation)) == sorted(meta.train_indices)
    classes = meta.class_indices
    assert np.bincount(classes[validation], minlength=4).tolist() == [1, 1, 1, 1]
    again = validation_split(meta, fraction=0.34, seed=3)
    assert np.array_equal(again[1], validation)
    assert any(not np.array_equal(validation_split(meta, 0.34, seed)[1], validation) for seed in range(4, 10))
    with pytest.raises(ValueError, match="fraction must be in"):
        validation_split(meta, 1.0)


def test_dataset_items_rgb_and_targets(cub_root: Path) -> None:
    meta = read_cub(cub_root)
    targets = explanation_targets(meta, "image")
    dataset = CubImages(meta, cub_root, indices=meta.test_indices, transform=None, targets=targets)
    assert len(dataset) == 12
    greyscale_position = 2  # image id 3 is saved greyscale by the fixture
    with Image.open(meta.image_path(greyscale_position)) as image:
        assert image.mode == "L"
    image, class_index, target = CubImages(meta, indices=[greyscale_position], targets=targets)[0]
    width, height = FIXTURE_IMAGE_SIZE
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert class_index == 0 and target.dtype == torch.float32 and target.shape == (12,)
    assert torch.equal(target, torch.from_numpy(targets.labels[greyscale_position]))


def test_dataloader_with_workers_and_mask(cub_root: Path) -> None:
    meta = read_cub(cub_root, not_visible_as_unknown=True)
    transform = build_transform(reference_preprocessing(size=32, resize=40), train=True)
    dataset = CubImages(meta, None, meta.train_indices, transform, explanation_targets(meta, "image"))
    pickle.loads(pickle.dumps(dataset))
    loader = DataLoader(dataset, batch_size=5, num_workers=2, shuffle=False)
    batches = list(loader)
    images, classes, targets, masks = batches[0]
    assert images.shape == (5, 3, 32, 32) and classes.tolist() == [0, 0, 0, 1, 1]
    assert targets.shape == masks.shape == (5, 12) and sum(len(batch[0]) for batch in batches) == 12


# --------------------------------------------------------------------------------------------------- transforms


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_reference_preprocessing_is_json_and_rebuilds_the_same_transform() -> None:
    cfg = reference_preprocessing()
    assert cfg == {
        "kind": "imagenet",
        "resize": 256,
        "crop": 224,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bilinear",
        "train_variant": "code",
    }
    restored = json.loads(json.dumps(cfg))
    image = _image(300, 200)
    expected = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(
        image
    )
    assert torch.equal(build_transform(restored, train=False)(image), expected)


def test_code_training_transform_is_random_and_right_size() -> None:
    transform = build_transform(reference_preprocessing(), train=True)
    names = [type(step).__name__ for step in transform.transforms]
    assert names == ["Resize", "RandomRotation", "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    image = _image(300, 200)
    torch.manual_seed(0)
    first, second = transform(image), transform(image)
    assert first.shape == second.shape == (3, 224, 224) and not torch.equal(first, second)
    pickle.loads(pickle.dumps(transform))


@pytest.mark.parametrize("augment", ["none", "trivial"])
def test_birds_training_crops_with_and_without_trivialaugment(augment: str) -> None:
    transform = birds_train_transform(64, 0.25, [0.5] * 3, [0.5] * 3, augment)
    names = [type(step).__name__ for step in transform.transforms]
    assert ("TrivialAugmentWide" in names) is (augment == "trivial") and names[:2] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
    ]
    torch.manual_seed(0)
    crops = [transform(_image(120, 90, seed)) for seed in range(4)]
    assert all(c.shape == (3, 64, 64) and c.min() >= -1 and c.max() <= 1 for c in crops)
    pickle.loads(pickle.dumps(transform))  # loader workers get it pickled
    with pytest.raises(ValueError, match="augment must be one of"):
        birds_train_transform(64, 0.25, [0.5] * 3, [0.5] * 3, "randaugment")


def test_text_variant_resizes_longer_side_and_pads_with_the_mean() -> None:
    cfg = reference_preprocessing(variant="text")
    image = _image(400, 100)  # -> 256 x 64, padded to 256 x 256
    output = build_transform(cfg, train=False)(image)
    assert output.shape == (3, 224, 224)
    # rows far from the centre are padding: the mean colour, i.e. ~0 after normalisation
    assert output[:, :40].abs().max() < 0.03 and output[:, -40:].abs().max() < 0.03
    assert output[:, 112].abs().max() > 0.5
    train = build_transform(cfg, train=True)
    assert [type(step).__name__ for step in train.transforms][:4] == [
        "ResizeLongerSide",
        "PadToSquare",
        "RandomApply",
        "RandomCrop",
    ]
    assert train(image).shape == (3, 224, 224)
    pickle.loads(pickle.dumps(train))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_variant": "paper"}, "train_variant 'paper'"),
        ({"crop": 300}, "crop 300 must not exceed resize 256"),
        ({"mean": [0.5, 0.5]}, "'mean' must be 3 numbers"),
        ({"interpolation": "cubic"}, "interpolation 'cubic'"),
        ({"colour": "rgb"}, "unknown \\['colour'\\]"),
        ({"std": [0.2, 0.0, 0.2]}, "'std' must be positive"),
    ],
)
def test_bad_preprocessing_config_is_rejected(change: dict, message: str) -> None:
    with pytest.raises(TransformConfigError, match=message):
        build_transform({**reference_preprocessing(), **change}, train=False)


def test_load_rgb_applies_exif_orientation_and_converts_modes(tmp_path: Path) -> None:
    image = _image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    loaded = load_rgb(tmp_path / "rotated.jpg")
    assert loaded.size == (20, 40) and loaded.mode == "RGB"

    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    assert load_rgb(tmp_path / "grey.png").getpixel((0, 0)) == (77, 77, 77)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    assert load_rgb(buffer).size == (40, 20)


def test_load_rgb_rejects_huge_images_before_decoding(tmp_path: Path) -> None:
    Image.new("1", (8000, 7000)).save(tmp_path / "bomb.png")  # 56 Mpx, a few KB on disk
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(ImageError, match=r"bomb.png: the image is 8000x7000 pixels \(56.0 megapixels\); at most 50.0"):
        load_rgb(tmp_path / "bomb.png")
    _image(40, 20).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="at most 500 pixels are accepted"):
        load_rgb(tmp_path / "small.png", max_pixels=500)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg: the file is not an image"):
        load_rgb(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="absent.jpg: there is no such file"):
        load_rgb(tmp_path / "absent.jpg")


# ----------------------------------------------------------------------------------------------------- download


def _fake_archive(tmp_path: Path) -> tuple[Path, str]:
    """A small .tgz laid out like the official archive (CUB_200_2011/ and attributes.txt at the top)."""
    source = make_cub_fixture(tmp_path / "source")
    archive = tmp_path / "fake.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "CUB_200_2011", arcname="CUB_200_2011")
        tar.add(source / "attributes.txt", arcname="attributes.txt")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_verify_and_extract_checks_md5_and_extracts(tmp_path: Path) -> None:
    archive, md5 = _fake_archive(tmp_path)
    with pytest.raises(CubChecksumError, match="md5 is .* expected 0+"):
        verify_and_extract(archive, tmp_path / "bad", md5="0" * 32)
    assert not (tmp_path / "bad").exists()  # checked before anything is written
    dest = verify_and_extract(archive, tmp_path / "good", md5=md5)
    assert len(read_cub(dest).images) == 24
    assert sorted(path.name for path in dest.iterdir()) == ["CUB_200_2011", "attributes.txt"]
    with pytest.raises(CubDownloadError, match="already holds"):
        verify_and_extract(archive, dest, md5=md5)


def test_unsafe_archive_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(CubDownloadError, match="cannot be extracted"):
        verify_and_extract(archive, tmp_path / "dest", md5=md5)
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "dest").iterdir()) == []  # the staging folder is cleaned up


def test_download_with_injected_opener(tmp_path: Path) -> None:
    archive, md5 = _fake_archive(tmp_path)
    requested = []

    def opener(url: str) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(archive.read_bytes())

    dest = download_cub(tmp_path / "data", url="file://fake", md5=md5, opener=opener)
    assert requested == ["file://fake"] and len(read_cub(dest).images) == 24
    assert not (dest / "CUB_200_2011.tgz").exists() and not (dest / "CUB_200_2011.tgz.part").exists()
    assert download_cub(dest, md5=md5, opener=opener) == dest and len(requested) == 1  # already there
    with pytest.raises(CubChecksumError):
        download_cub(tmp_path / "corrupt", md5="1" * 32, opener=opener)
    assert not (tmp_path / "corrupt" / "CUB_200_2011.tgz").exists()


def test_download_offline_says_what_to_do(tmp_path: Path) -> None:
    def offline(url: str) -> io.BytesIO:
        raise urllib.error.URLError("no network")

    with pytest.raises(CubDownloadError, match="by hand.*--data"):
        download_cub(tmp_path / "data", opener=offline)
    assert list((tmp_path / "data").iterdir()) == []
