"""A shapes mirror that shows where: corners found in the drawing itself, moved with the augmentation, region
targets, the shapes part mirror's exact maps and its weights file, and the fine-tuning step that trains it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bundles import make_shapes_bundle
from explainer.pair.bundle import load_bundle, save_bundle
from explainer.pair.models import MirrorError, PartMirror, build_pair, part_mirror_spec
from explainer.shapes import grounding
from explainer.shapes.training import augment_batch, to_tensor
from explainer.verdict.predictor import Explainer

WIDE = {"n_classes": 4, "widths": [8, 16, 32, 64], "kernel": 3, "padding": 1, "in_chans": 1, "image_size": 64}


def outlined(corners: list[tuple[float, float]], pen: int = 2, size: int = 64) -> np.ndarray:
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).polygon(corners, outline=0, width=pen)
    return np.asarray(image)


def rotated_rectangle(cx: float, cy: float, w: float, h: float, turn: float) -> list[tuple[float, float]]:
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in [(-w, -h), (w, -h), (w, h), (-w, h)]]


def nearest(found: np.ndarray, corners: list[tuple[float, float]]) -> float:
    """The largest distance from a true corner to the nearest corner found."""
    true = np.array(corners)
    return float(np.hypot(*(true[:, None] - found[None]).transpose(2, 0, 1)).min(1).max())


@pytest.mark.parametrize("turn", [0.0, 0.4, 1.1, 2.5])
def test_the_corners_of_a_drawn_triangle_and_rectangle_are_found(turn: float) -> None:
    triangle = [(32 + 24 * math.cos(turn + a), 32 + 24 * math.sin(turn + a)) for a in (0, 2.2, 4.1)]
    assert nearest(grounding.drawn_corners(outlined(triangle) < 128, 3), triangle) <= 2.5
    box = rotated_rectangle(32, 32, 22, 12, turn)
    assert nearest(grounding.drawn_corners(outlined(box) < 128, 4), box) <= 2.5
    assert grounding.drawn_corners(np.zeros((64, 64), bool), 4) is None
    with pytest.raises(ValueError, match="3 or 4"):
        grounding.drawn_corners(outlined(box) < 128, 5)


def test_corners_move_with_the_augmentation() -> None:
    boxes = [rotated_rectangle(32, 32, 20, 11, t) for t in np.linspace(0, 3, 12)]
    images = to_tensor(np.stack([outlined(b, pen=3) for b in boxes]), False)
    labels = torch.zeros(len(boxes), 5)
    labels[:, 2] = 1
    corners = grounding.find_corners(images, labels)
    moved_images, theta = augment_batch(images, torch.Generator().manual_seed(3), return_theta=True)
    moved = grounding.move_points(corners, theta, (64, 64))
    again = grounding.find_corners(moved_images, labels)
    gaps = torch.cdist(moved, again).min(2).values  # each moved corner to the nearest corner found after the move
    assert float(gaps.median()) < 2.0 and float(gaps.max()) < 4.0
    assert not torch.allclose(moved, corners, atol=1.0)  # the augmentation did move them


def test_region_targets_put_corners_at_their_cells_and_spread_the_ink() -> None:
    triangle = [(8.0, 8.0), (56.0, 8.0), (32.0, 56.0)]
    images = torch.cat([to_tensor(outlined(triangle)[None], False), torch.ones(1, 1, 64, 64)])  # and a blank
    labels = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.float32)
    corners = grounding.find_corners(images, labels)
    assert torch.isnan(corners[0, 3]).all() and torch.isnan(corners[1]).all()  # three corners; none on a blank
    targets, known = grounding.region_targets(images, corners, (16, 16))
    assert known.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    corner_map = targets[0, 0].view(16, 16)
    assert float(corner_map.sum()) == pytest.approx(1.0)
    top = {divmod(int(i), 16) for i in corner_map.flatten().topk(3).indices}
    assert top == {(2, 2), (2, 14), (14, 8)}  # (row, column) of cells 4 px wide: 8 // 4, 56 // 4
    ink = targets[0, 1].view(16, 16)
    assert float(ink.sum()) == pytest.approx(1.0) and ink[8, 8] == 0 and ink[2, 8] > 0  # on the outline only


def _shapes_part_pair() -> torch.nn.Module:
    main_info = build_pair({"family": "shapes", "main": WIDE, "mirror": {"widths": [4, 4, 4, 4], "kernel": 3,
                                                                         "padding": 1}}).main.feature_info  # fmt: skip
    mirror = PartMirror(
        main_info, 5, grounding.REGIONS, grounding.ROUTES, width=8, taps=grounding.mirror_taps(main_info), depth=2,
        context=True, stem=grounding.mirror_stem(main_info),
    )  # fmt: skip
    spec = {"n_explanations": 5, **part_mirror_spec(mirror)}
    torch.manual_seed(0)
    pair = build_pair({"family": "shapes", "main": WIDE, "mirror": spec})
    with torch.no_grad():
        pair.mirror.weight.normal_()
        pair.mirror.bias.normal_()
    return pair.eval(), spec


def test_a_shapes_part_mirror_maps_at_stride_four_and_sums_to_its_logits() -> None:
    pair, spec = _shapes_part_pair()
    assert spec["taps"] == [1, 2, 3] and spec["depth"] == 2 and spec["context"] and spec["stem"] == 0
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        _, expl = pair(x)
        _, expl2, _, maps = pair.forward_maps(x)
    assert maps.shape == (2, 5, 16, 16)
    torch.testing.assert_close(expl, expl2)
    torch.testing.assert_close(maps.sum((2, 3)) + pair.mirror.bias, expl, rtol=1e-5, atol=1e-5)
    with pytest.raises(MirrorError, match="two or more distinct stages"):
        PartMirror(pair.main.feature_info, 5, grounding.REGIONS, grounding.ROUTES, taps=(3, 1))
    with pytest.raises(MirrorError, match="two or more distinct stages"):
        PartMirror(pair.main.feature_info, 5, grounding.REGIONS, grounding.ROUTES, taps=(1, 9))
    with pytest.raises(MirrorError, match="must come before"):
        PartMirror(pair.main.feature_info, 5, grounding.REGIONS, grounding.ROUTES, taps=(1, 2), stem=2)


def test_a_shapes_part_mirror_survives_the_weights_file(tmp_path: Path) -> None:
    pair, spec = _shapes_part_pair()
    _, meta = load_bundle(make_shapes_bundle(tmp_path / "ref.safetensors"))
    meta["architecture"] = {"family": "shapes", "main": WIDE, "mirror": spec}
    save_bundle(tmp_path / "parts.safetensors", pair, meta)
    loaded, _ = load_bundle(tmp_path / "parts.safetensors")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], pair(x)[1])
    image = outlined([(10.0, 10.0), (54.0, 12.0), (30.0, 50.0)], size=200)
    _, _, where = Explainer.load(tmp_path / "parts.safetensors").where(image)
    assert where.explanation_maps.shape == (5, 16, 16)
    x_peak, y_peak = where.for_explanation(1).peak()
    assert 0 <= x_peak < 200 and 0 <= y_peak < 200


def test_the_fine_tuning_step_trains_a_part_mirror_on_the_frozen_main_network(tmp_path: Path) -> None:
    from train.finetune_shapes_sketches import main

    init = make_shapes_bundle(tmp_path / "init.safetensors")
    tiny = ["--base-per-class", "6", "--sketches-per-class", "4", "--sketch-outliers", "8", "--outliers", "4",
            "--noise", "4", "--batch-size", "16", "--no-progress", "--threads", "1"]  # fmt: skip
    out = tmp_path / "parts.safetensors"
    main(["--init", str(init), "--out", str(tmp_path / "run"), "--output", str(out), "--epochs", "0",
          "--mirror-epochs", "1", "--mirror-kind", "parts", "--mirror-width", "8", *tiny])  # fmt: skip
    before, _ = load_bundle(init)
    after, meta = load_bundle(out)
    assert isinstance(after.mirror, PartMirror) and meta["architecture"]["mirror"]["kind"] == "parts"
    spec = meta["architecture"]["mirror"]
    assert spec["body"] == before.mirror.spec and spec["taps"] == [0, 1, 2]  # the old mirror's blocks, read out
    assert all(torch.equal(v, after.main.state_dict()[k]) for k, v in before.main.state_dict().items())
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"val_corner_pointing"' in log and '"train_where_loss"' in log


def test_a_part_mirror_keeps_the_trained_mirror_blocks_warm_under_its_read_out() -> None:
    pair = build_pair({"family": "shapes", "main": WIDE, "mirror": {"widths": [16, 32, 64, 64], "kernel": 3,
                                                                    "padding": 1}})  # fmt: skip
    old = pair.mirror
    mirror = grounding.shapes_part_mirror(pair.main.feature_info, 5, width=8, depth=1, body=old)
    body = mirror.body.state_dict()
    assert body.keys() == {k for k in old.state_dict() if k.startswith("blocks.")}
    assert all(torch.equal(body[k], v) for k, v in old.state_dict().items() if k.startswith("blocks."))
    spec = part_mirror_spec(mirror)
    assert spec["taps"] == [0, 1, 2, 3] and spec["body"] == old.spec  # read at 16 x 16 (stride 4) and coarser
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        _, taps = pair.forward_main(x)
        logits, regions, maps = mirror.eval().forward_maps(x, taps)
    assert regions.shape == (1, 2, 16, 16) and maps.shape == (1, 5, 16, 16)
    torch.testing.assert_close(maps.sum((2, 3)) + mirror.bias, logits)


def test_a_weights_file_cannot_ask_for_a_part_mirror_without_end() -> None:
    from explainer.pair.models import part_mirror

    info = build_pair({"family": "shapes", "main": WIDE, "mirror": {"widths": [4, 4, 4, 4], "kernel": 3,
                                                                    "padding": 1}}).main.feature_info  # fmt: skip
    spec = {"kind": "parts", "regions": ["corners"], "routes": [[0]], "width": 10**9}
    with pytest.raises(MirrorError, match="out of range"):
        part_mirror(info, 1, spec)
    with pytest.raises(MirrorError, match="out of range"):
        part_mirror(info, 1, {**spec, "width": 8, "depth": 10**6})
