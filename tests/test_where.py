"""Where an explanation looks: the part mirror's exact maps, every pair's maps, input frames that undo each task's
crop and resize, peaks in the image's own pixels, the pointing measure, and the CUB part locations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bundles import make_birds_bundle, make_shapes_bundle
from cub_fixture import make_cub_fixture
from explainer.birds import cub
from explainer.inputs.transforms import EvalView, build_transform, reference_preprocessing
from explainer.pair.bundle import load_bundle, save_bundle
from explainer.pair.models import MirrorError, MirrorPair, PartMirror, build_pair, region_targets, timm_feature_info
from explainer.verdict.predictor import Explainer
from explainer.verdict.where import Heatmap, InputFrame, overlay, pointing, resize_crop_frame

ROUTES = [[1], [1], [8], [], [0, 9]]  # beak, beak, wing, whole bird, back + nape


def _part_pair() -> MirrorPair:
    architecture = {
        "family": "timm",
        "model_name": "tf_efficientnet_lite0",
        "n_classes": 3,
        "n_explanations": len(ROUTES),
        "mirror": {"kind": "parts", "regions": list(cub.REGIONS), "routes": ROUTES, "width": 16},
    }
    torch.manual_seed(0)
    pair = build_pair(architecture)
    with torch.no_grad():  # a trained-looking head: weights and biases away from their zero start
        pair.mirror.weight.normal_()
        pair.mirror.bias.normal_()
    return pair.eval()


def test_part_mirror_maps_sum_exactly_to_its_logits() -> None:
    pair = _part_pair()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits, expl = pair(x)
        logits2, expl2, class_maps, expl_maps = pair.forward_maps(x)
    assert torch.equal(logits, logits2) and torch.equal(expl, expl2)
    assert expl_maps.shape == (2, len(ROUTES), 6, 6)  # the stride-16 stage of a 96 px input
    torch.testing.assert_close(expl_maps.sum((2, 3)) + pair.mirror.bias, expl, rtol=1e-5, atol=1e-5)
    classifier = pair.main.get_classifier()
    torch.testing.assert_close(class_maps.sum((2, 3)) + classifier.bias, logits, rtol=1e-4, atol=1e-4)


def test_part_mirror_routes_each_explanation_through_its_regions() -> None:
    pair = _part_pair()
    route = pair.mirror.route
    assert route.shape == (len(ROUTES), len(cub.REGIONS) + 1)
    assert route[0, 1] == 1 and route[3, len(cub.REGIONS)] == 1  # the beak; the whole bird
    assert route[4, 0] == route[4, 9] == 0.5 and float(route.sum()) == pytest.approx(len(ROUTES))
    with pytest.raises(MirrorError, match="out of range"):
        PartMirror(timm_feature_info(pair.main), 2, cub.REGIONS, [[0], [99]])
    with pytest.raises(MirrorError, match="one per explanation"):
        PartMirror(timm_feature_info(pair.main), 3, cub.REGIONS, [[0], [1]])


def test_part_mirror_survives_the_weights_file(tmp_path) -> None:
    pair = _part_pair()
    path = make_birds_bundle(tmp_path / "birds.safetensors", n_classes=3, n_explanations=len(ROUTES))
    _, meta = load_bundle(path)
    mirror = {"kind": "parts", "regions": list(cub.REGIONS), "routes": ROUTES, "width": 16}
    meta["architecture"] = {**meta["architecture"], "model_name": "tf_efficientnet_lite0", "mirror": mirror}
    meta.pop("scope", None)
    save_bundle(tmp_path / "parts.safetensors", pair, meta)
    loaded, _ = load_bundle(tmp_path / "parts.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], pair(x)[1])
    meta["architecture"]["mirror"] = {"kind": "lens"}
    save_bundle(tmp_path / "bad.safetensors", pair, meta)
    with pytest.raises(Exception, match="mirror kind"):
        load_bundle(tmp_path / "bad.safetensors")


def test_region_targets_put_each_point_in_its_cell() -> None:
    points = torch.zeros(1, 15, 3)
    points[0, 1] = torch.tensor([40.0, 8.0, 1.0])  # the beak, in cell (row 0, column 2) of a 4x4 map of 64 px
    points[0, 6] = torch.tensor([100.0, 8.0, 1.0])  # an eye outside the input: teaches nothing
    box = torch.tensor([[16.0, 0.0, 32.0, 32.0]])
    targets, known = region_targets(points, list(cub.PART_REGION), box, (4, 4), (64, 64))
    assert known[0, cub.REGIONS.index("beak")] == 1 and known[0, cub.REGIONS.index("eye")] == 0
    assert int(targets[0, cub.REGIONS.index("beak")].argmax()) == 2
    whole = targets[0, len(cub.REGIONS)].view(4, 4)
    assert whole[0, 1] > 0 and whole[3, 3] == 0 and float(whole.sum()) == pytest.approx(1.0)


def test_resize_crop_frame_matches_torchvision() -> None:
    image = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(image).rectangle((200, 120, 203, 123), fill="black")  # a dot at about (201.5, 121.5)
    cfg = reference_preprocessing(size=96, resize=110)
    tensor = build_transform(cfg, train=False)(image)
    frame = resize_crop_frame(image.size, 110, 96)
    v, u = np.unravel_index(int(tensor.mean(0).argmin()), (96, 96))
    x, y = frame.to_image(u + 0.5, v + 0.5)
    assert abs(x - 201.5) < 2.5 and abs(y - 121.5) < 2.5
    assert frame.to_input(*frame.to_image(10.0, 20.0)) == pytest.approx((10.0, 20.0))


def test_heatmap_peak_lands_on_the_image_pixel() -> None:
    frame = InputFrame(x0=50.0, y0=-10.0, sx=2.0, sy=2.0, input_width=32, input_height=32, image_width=120,
                       image_height=60)  # fmt: skip
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[1, 2] = 1.0  # the cell centred on input (20, 12)
    x, y = Heatmap(grid, frame).peak()
    assert abs(x - (50 + 2 * 20)) <= 2 and abs(y - (-10 + 2 * 12)) <= 2
    values, mask = Heatmap(grid, frame).on_image()
    assert values.shape == (60, 120) and not mask[:, :50].any()  # the input covers x 50..114 and y -10..54
    assert mask[:54, 60].all() and not mask[55:, 60].any() and not mask[:, 115:].any()
    assert overlay(Image.new("RGB", (120, 60)), Heatmap(grid, frame)).size == (120, 60)


def test_a_frame_resized_to_a_thumbnail_puts_the_peak_on_the_same_spot() -> None:
    frame = resize_crop_frame((1600, 1200), 256, 224)
    grid = np.zeros((7, 7), dtype=np.float32)
    grid[2, 5] = 1.0
    x, y = Heatmap(grid, frame).peak()
    small = frame.resized(400, 300)
    assert (small.image_width, small.image_height, small.input_width) == (400, 300, 224)
    sx, sy = Heatmap(grid, small).peak()
    assert abs(sx - x / 4) <= 1 and abs(sy - y / 4) <= 1  # the same place, a quarter of the pixels
    assert small.to_image(10.0, 20.0) == pytest.approx(tuple(v / 4 for v in frame.to_image(10.0, 20.0)))


@pytest.fixture(scope="module")
def shapes_path(tmp_path_factory):
    return make_shapes_bundle(tmp_path_factory.mktemp("shapes") / "shapes.safetensors")


def test_shapes_frame_undoes_the_crop_to_content(shapes_path) -> None:
    explainer = Explainer.load(shapes_path)
    image = Image.new("L", (400, 300), 255)
    corners = [(100, 250), (200, 60), (300, 250)]
    ImageDraw.Draw(image).polygon(corners, outline=0, width=3)
    tensor, frame = explainer.task_spec.framed_preprocessor(explainer.preprocessing)(image)
    ink = tensor[0].numpy() < 0.5
    rows, columns = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    left, top = frame.to_image(columns[0], rows[0])
    right, bottom = frame.to_image(columns[-1] + 1, rows[-1] + 1)
    assert abs(left - 99) < 8 and abs(top - 59) < 8 and abs(right - 301) < 8 and abs(bottom - 251) < 8


@pytest.mark.parametrize("task", ["shapes", "birds"])
def test_explainer_where_gives_every_map_and_peaks_inside_the_image(tmp_path, shapes_path, task) -> None:
    if task == "shapes":
        explainer = Explainer.load(shapes_path)
        image = Image.new("L", (180, 120), 255)
        ImageDraw.Draw(image).ellipse((40, 20, 120, 100), outline=0, width=3)
    else:
        explainer = Explainer.load(make_birds_bundle(tmp_path / "birds.safetensors"))
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8))
    probs, expls, where = explainer.where(image)
    direct_probs, direct_expls = explainer.infer([image])
    np.testing.assert_allclose(probs, direct_probs[0], atol=1e-5)
    np.testing.assert_allclose(expls, direct_expls[0], atol=1e-5)
    assert where.class_maps.shape[0] == len(explainer.class_names)
    assert where.explanation_maps.shape[0] == len(explainer.explanation_names)
    result = explainer.explain(probs, expls, threshold=0.0)
    peaks = where.peaks_json(explainer.display_names, result.kept_indices, result.verdict.predicted_class)
    assert set(peaks) == set(result.kept_explanations) | {"class"}
    for entry in peaks.values():
        x, y = entry["peak"]
        assert 0 <= x < image.width and 0 <= y < image.height


def test_pointing_counts_hits_near_the_named_part_only() -> None:
    points = np.zeros((1, 15, 3), dtype=np.float32)
    points[0, 1] = (10, 10, 1)  # the beak
    points[0, 8] = (50, 50, 1)  # the left wing
    boxes = np.array([[0, 0, 60, 60]], dtype=np.float32)  # a hit within 0.15 * 60 = 9 px
    maps = torch.zeros(1, 3, 8, 8)
    maps[0, 0, 1, 1] = 1.0  # peak near (12, 12): the beak
    maps[0, 1, 1, 1] = 1.0  # the same place, but it names the wing
    kept = np.array([[True, True, True]])
    hits, counted = pointing(maps, kept, points, list(cub.PART_REGION), [[1], [8], []], boxes, (64, 64))
    assert hits.tolist() == [1, 0, 0] and counted.tolist() == [1, 1, 0]  # the whole-bird explanation is not counted


def test_cub_part_locations_and_views(tmp_path) -> None:
    root = make_cub_fixture(tmp_path, n_classes=2, images_per_class=4)
    meta = cub.read_cub(root)
    points = cub.read_part_locations(root, meta)
    boxes = cub.read_stored_boxes(root, meta)
    assert points.shape == (8, 15, 3) and boxes.shape == (8, 4)
    train = meta.train_indices
    assert points[train, :, 2].sum() > 0 and points[meta.test_indices].sum() == 0  # the test photos kept back
    assert points[train[0], 3, 2] == 0  # every fourth part is not visible
    visible = points[train][:, :, 2] > 0
    x, y = points[train][:, :, 0], points[train][:, :, 1]
    bx, by, bw, bh = (boxes[train][:, k : k + 1] for k in range(4))
    assert ((x >= bx - 0.1) & (x <= bx + bw + 0.1) & (y >= by - 0.1) & (y <= by + bh + 0.1))[visible].all()
    regions = cub.group_regions(meta.attribute_raw_names)
    assert regions[0] == (cub.REGIONS.index("beak"),) and regions[-1] == ()  # bill shape; size (the whole bird)
    view = EvalView(reference_preprocessing(size=32, resize=40))
    dataset = cub.CubPartImages(meta, train, points, boxes, view)
    tensor, label, where, box = dataset[0]
    assert tensor.shape == (3, 32, 32) and where.shape == (15, 3) and box.shape == (4,)
    inside = (where[:, 0] >= 0) & (where[:, 0] < 32) & (where[:, 1] >= 0) & (where[:, 1] < 32)
    assert bool((where[:, 2] > 0).le(inside).all())  # nothing outside the input is visible


def test_part_routes_cover_every_cub_group() -> None:
    assert len(cub.GROUP_PARTS) == 28 and len(cub.PART_REGION) == 15
    assert math.isclose(sum(1 for parts in cub.GROUP_PARTS.values() if not parts), 3)  # size, shape, primary colour


def test_command_line_where_adds_peaks_and_writes_overlays(tmp_path, shapes_path, capsys) -> None:
    from explainer.__main__ import main

    image = Image.new("L", (200, 160), 255)
    ImageDraw.Draw(image).polygon([(30, 140), (100, 20), (170, 140)], outline=0, width=3)
    path = tmp_path / "my triangle.png"
    image.save(path)
    assert main(["predict", "--weights", str(shapes_path), str(path)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "where" not in plain
    out = tmp_path / "where"
    assert main(["predict", "--weights", str(shapes_path), "--threshold", "0", "--where-dir", str(out), str(path)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["where"]) == set(row["kept_explanations"]) | {"class"}
    assert all(0 <= e["peak"][0] < 200 and 0 <= e["peak"][1] < 160 for e in row["where"].values())
    written = sorted(p.name for p in out.iterdir())
    assert "0000-my-triangle-class.png" in written and len(written) == len(row["where"])
    assert Image.open(out / written[0]).size == (200, 160)


def test_where_tensor_and_read_scope_are_where_in_two_steps(tmp_path) -> None:
    """The app's path: the framed input once, then one pass for the probabilities and every map, then the gate."""
    from scope_fixtures import HORSE, add_scope

    path = add_scope(make_birds_bundle(tmp_path / "birds.safetensors"), HORSE, threshold=0.1, share_preprocessing=False)
    explainer = Explainer.load(path)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    tensor, frame = explainer.framed_preprocess(image)
    assert torch.equal(tensor, explainer.preprocess(image)) and frame == explainer.where(image)[2].frame
    probs, expls, where = explainer.where_tensor(tensor, frame)
    whole_probs, whole_expls, whole = explainer.where(image)
    np.testing.assert_allclose(probs, whole_probs, atol=1e-6)
    np.testing.assert_allclose(where.explanation_maps, whole.explanation_maps, atol=1e-5)
    reading = explainer.read_scope(tensor, explainer.scope_input(image, tensor))
    served = explainer.infer_with_scope([image])[2][0]
    assert reading is not None and reading.score == pytest.approx(served.score, abs=1e-6)
    with pytest.raises(ValueError, match="needs its own input"):
        explainer.read_scope(tensor)
    assert Explainer.load(make_birds_bundle(tmp_path / "plain.safetensors")).read_scope(tensor) is None


def test_whole_photo_view_keeps_the_shape_and_batches_by_size(tmp_path) -> None:
    cfg = reference_preprocessing(size=64, resize=64)
    cfg["crop"] = 0  # the whole photo, its shorter side 64 px
    wide, tall = Image.new("RGB", (200, 100), "white"), Image.new("RGB", (100, 150), "white")
    assert build_transform(cfg, train=False)(wide).shape == (3, 64, 128)
    frame = resize_crop_frame(wide.size, 64, 0)
    assert (frame.x0, frame.y0, frame.input_width, frame.input_height) == (0.0, 0.0, 128, 64)
    assert frame.to_image(128, 64) == pytest.approx((200.0, 100.0))
    path = make_birds_bundle(tmp_path / "birds.safetensors", model_name="tf_efficientnet_lite0")
    _, meta = load_bundle(path)
    explainer = Explainer.load(path)
    explainer.preprocessing = {**meta["preprocessing"], "crop": 0}  # as a file with a whole-photo view says
    explainer._preprocess = None
    images = [wide, tall, wide]
    probs, expls = explainer.infer(images)
    one_by_one = np.concatenate([explainer.infer([im])[0] for im in images])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)
    assert explainer.preview(explainer.preprocess(wide), 100).size == (100, 50)


def test_shapes_pointing_report_on_drawn_shapes_with_known_corners(tmp_path, shapes_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "train/evaluate_where.py", "--weights", str(shapes_path), "--out", str(tmp_path / "w"),
         "--shapes-per-kind", "2", "--sheet", "2"],
        capture_output=True, text=True, cwd=root, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "w" / "pointing.json").read_text())
    assert {k: v["shapes"] for k, v in report["by_kind"].items()} == {"circle": 2, "triangle": 2, "square": 2,
                                                                        "rectangle": 2}  # fmt: skip
    assert 0 <= report["vertex_explanations"] <= 1 and (tmp_path / "w" / "hits.png").exists()


def test_flip_average_is_the_mean_of_both_views_and_its_maps_still_sum_to_the_logits() -> None:
    """The test view "photo + mirror image": mean logits of the two, maps of the flipped one flipped back, so the
    maps still add up to the logits; mirroring the photo then changes nothing but mirrors the maps."""
    pair = _part_pair()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        plain, plain_flipped = pair(x), pair(x.flip(-1))
        pair.flip_average = True
        logits, expl = pair(x)
        logits2, expl2, class_maps, expl_maps = pair.forward_maps(x)
        mirrored = pair.forward_maps(x.flip(-1))
    torch.testing.assert_close(logits, (plain[0] + plain_flipped[0]) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(expl, (plain[1] + plain_flipped[1]) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-5)
    assert expl_maps.shape == (2, len(ROUTES), 6, 6)
    torch.testing.assert_close(expl_maps.sum((2, 3)) + pair.mirror.bias, expl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(class_maps.sum((2, 3)) + pair.main.get_classifier().bias, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mirrored[0], logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mirrored[3], expl_maps.flip(-1), rtol=1e-4, atol=1e-4)


def test_a_weights_file_with_the_flip_view_runs_both_views_and_refuses_a_bad_value(tmp_path) -> None:
    path = make_birds_bundle(tmp_path / "birds.safetensors", model_name="tf_efficientnet_lite0")
    pair, meta = load_bundle(path)
    assert pair.flip_average is False  # files without the key: the photo alone
    meta["preprocessing"]["flip_average"] = True
    save_bundle(tmp_path / "flip.safetensors", pair, meta)
    explainer = Explainer.load(tmp_path / "flip.safetensors")
    assert explainer.pair.flip_average is True
    # 320 x 256 px: resized to itself, cropped 16 px from top and bottom, 48 px from left and right, so the crop of the
    # mirror image is the mirror image of the crop
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (256, 320, 3), dtype=np.uint8))
    mirror_image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    probs, expls = explainer.infer([image, mirror_image])
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)
    np.testing.assert_allclose(expls[0], expls[1], atol=1e-4)
    explainer.pair.flip_average = False
    assert np.abs(explainer.infer([image, mirror_image])[0][0] - probs[0]).max() > 1e-3  # one view alone differs
    explainer.pair.flip_average = True
    np.testing.assert_allclose(explainer.where(image)[0], probs[0], atol=1e-5)
    meta["preprocessing"]["flip_average"] = "yes"
    save_bundle(tmp_path / "bad.safetensors", pair, meta)
    with pytest.raises(Exception, match="flip_average"):
        load_bundle(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="true or false"):
        build_transform(meta["preprocessing"], train=False)
