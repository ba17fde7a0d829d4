"""The two model families, the weights file and the command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundles import required_shapes_metadata as shapes_meta
from explainer.pair.bundle import BundleError, load_bundle, read_bundle, save_bundle
from explainer.pair.models import (
    MirrorError,
    MirrorPair,
    ShapesCNN,
    ShapesMirror,
    TimmMirror,
    build_pair,
    fuse_batchnorm,
    keras_parameter_count,
    reference_shapes_architecture,
)
from explainer.verdict.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]


def timm_arch(name: str, join: str = "add", classes: int = 5, expl: int = 7) -> dict:
    return {"family": "timm", "model_name": name, "n_classes": classes, "n_explanations": expl, "join": join}


# -- shapes family ----------------------------------------------------------------------------------------------------


def test_reference_pair_parameter_counts_match_the_keras_tables():
    pair = build_pair(reference_shapes_architecture())
    assert keras_parameter_count(pair.main) == 1459
    assert keras_parameter_count(pair.mirror) == 1073  # 243+12 + 387+12 + 387+12 + 20
    assert [f["size"] for f in pair.main.feature_info] == [30, 13, 5]


def test_reference_pair_output_shapes_and_head_contract():
    pair = build_pair(reference_shapes_architecture()).eval()
    x = torch.rand(3, 1, 64, 64)
    logits, expl = pair(x)
    assert logits.shape == (3, 4) and expl.shape == (3, 5)
    final, taps = pair.main.forward_intermediates(x)
    assert [t.shape[1:] for t in taps] == [(5, 30, 30), (5, 13, 13), (5, 5, 5)]
    assert torch.allclose(pair.main.forward_head(final), pair.main(x))


def test_shapes_add_join_needs_equal_widths():
    main = ShapesCNN(widths=(8, 8, 8), kernel=3, padding=1)
    mirror = ShapesMirror(main.feature_info, widths=(8, 8, 8), kernel=3, padding=1, join="add")
    assert mirror(torch.rand(2, 1, 64, 64), main.forward_intermediates(torch.rand(2, 1, 64, 64))[1]).shape == (2, 5)
    with pytest.raises(MirrorError, match="join 'add' needs"):
        ShapesMirror(main.feature_info, widths=(4, 4, 4), kernel=3, padding=1, join="add")
    with pytest.raises(ValueError, match="join 'sum'"):
        ShapesMirror(main.feature_info, join="sum")


def test_frozen_coupling_sends_no_gradient_to_the_main_network():
    pair = build_pair(reference_shapes_architecture(), coupling="frozen")
    pair.train()
    assert not pair.main.training  # BatchNorm statistics stay fixed too
    before = [b.clone() for b in pair.main.buffers()]
    _, expl = pair(torch.rand(4, 1, 64, 64))
    expl.sum().backward()
    assert all(p.grad is None for p in pair.main.parameters())
    assert all(p.grad is not None for p in pair.mirror.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, pair.main.buffers(), strict=False))
    pair.set_coupling("joint")
    logits, expl = pair(torch.rand(4, 1, 64, 64))
    (logits.sum() + expl.sum()).backward()
    assert all(p.grad is not None for p in pair.main.parameters())


# -- timm family ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, join",
    [
        ("resnet18", "add"),
        ("resnet18", "concat"),
        ("resnet50", "add"),
        ("tf_efficientnet_lite0", "add"),
        ("tf_efficientnet_lite0", "concat"),
    ],
)
def test_timm_pairs_run_and_keep_the_head_contract(name, join):
    pair = build_pair(timm_arch(name, join)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, expl = pair(x)
        final, taps = pair.main.forward_intermediates(x)
        assert torch.allclose(pair.main.forward_head(final), pair.main(x), atol=1e-5)
    assert logits.shape == (2, 5) and expl.shape == (2, 7)
    channels = [f["num_chs"] for f in pair.main.feature_info]
    assert [t.shape[1] for t in taps] == channels


def test_timm_mirror_is_sized_from_feature_info_and_drops_its_unused_stem():
    pair = build_pair(timm_arch("resnet18"))
    assert pair.mirror.stage_channels == [64, 64, 128, 256, 512]
    keys = pair.mirror.state_dict().keys()
    assert not any(k.startswith("net.conv1.") for k in keys)  # start="stem": the mirror reads the main stem instead
    assert len(keys) == len(set(keys))


def test_timm_mirror_start_image_uses_its_own_stem():
    pair = build_pair({**timm_arch("resnet18"), "start": "image"}).eval()
    assert any(k.startswith("net.conv1.") for k in pair.mirror.state_dict())
    assert pair(torch.rand(1, 3, 64, 64))[1].shape == (1, 7)


def test_a_backbone_that_cannot_be_mirrored_gets_a_clear_error():
    with pytest.raises(MirrorError, match="not a staged CNN"):
        build_pair(timm_arch("vit_tiny_patch16_224"))
    with pytest.raises(MirrorError, match="timm cannot build"):
        build_pair(timm_arch("no_such_network"))
    with pytest.raises(MirrorError, match="same architecture"):
        TimmMirror("resnet18", [{"num_chs": 1}], 3)


def test_timm_frozen_pair_leaves_main_untouched():
    pair = build_pair(timm_arch("resnet18"), coupling="frozen").train()
    _, expl = pair(torch.rand(2, 3, 64, 64))
    expl.sum().backward()
    assert all(p.grad is None for p in pair.main.parameters())
    assert isinstance(pair, MirrorPair)


# -- weights file -----------------------------------------------------------------------------------------------------


def test_bundle_round_trip_rebuilds_the_same_pair(tmp_path):
    pair = build_pair(reference_shapes_architecture()).eval()
    path = tmp_path / "shapes.safetensors"
    save_bundle(path, pair, {**shapes_meta(), "metrics": {"x": 1}})
    loaded, meta = load_bundle(path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(pair(x), loaded(x), strict=False):
            assert torch.equal(a, b)
    assert meta["metrics"] == {"x": 1} and meta["format_version"] == 1
    assert path.stat().st_mode & 0o044  # readable by others, unlike mkstemp's default


def _batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def _randomised_statistics(model: torch.nn.Module) -> None:
    """BatchNorm away from its identity start, so that folding it changes the convolutions' weights."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize("kind", ["timm-parts", "shapes"])
def test_folding_batchnorm_keeps_the_outputs_and_the_maps(kind):
    if kind == "shapes":
        pair, x = build_pair(reference_shapes_architecture()), torch.rand(2, 1, 64, 64)
    else:
        from explainer.birds import cub

        spec = {"kind": "parts", "regions": list(cub.REGIONS), "routes": [[1], [8], []], "width": 16}
        pair = build_pair({**timm_arch("tf_efficientnet_lite0", expl=3), "mirror": spec})
        x = torch.randn(2, 3, 96, 96)
    _randomised_statistics(pair)
    pair.eval()
    with torch.no_grad():
        before = pair.forward_maps(x)
        count = _batchnorms(pair)
        folded = fuse_batchnorm(pair)
        left = _batchnorms(pair)
        after = pair.forward_maps(x)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    if kind == "shapes":  # Keras's order, conv -> ReLU -> BatchNorm: nothing to fold, nothing changed
        assert folded == 0 and left == count > 0
    else:  # every BatchNorm of an EfficientNet-Lite and of the part mirror follows its convolution
        assert folded == count and left == 0
        with pytest.raises(ValueError, match="eval mode"):
            fuse_batchnorm(build_pair({**timm_arch("tf_efficientnet_lite0", expl=3), "mirror": spec}).train())


def test_a_loaded_explainer_serves_folded_networks_with_the_files_outputs(tmp_path):
    from scope_fixtures import HORSE, add_scope

    from bundles import make_birds_bundle

    path = add_scope(make_birds_bundle(tmp_path / "birds.safetensors"), HORSE, share_preprocessing=False)
    served = Explainer.load(path)
    stored, meta = load_bundle(path)
    # timm's test ResNet keeps one: its stem's BatchNorm follows a Sequential, not a convolution
    assert _batchnorms(served.pair) == 1 < _batchnorms(stored) and _batchnorms(served.scope.network) == 0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8))
    probs, expls, readings = served.infer_with_scope([image])
    with torch.no_grad():
        logits, expl_logits = stored(served.preprocess(image)[None])
    np.testing.assert_allclose(probs[0], torch.softmax(logits, 1)[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(expls[0], torch.sigmoid(expl_logits)[0].numpy(), atol=1e-5)


def test_half_storage_halves_the_file_and_stays_close(tmp_path):
    pair = build_pair(timm_arch("resnet18")).eval()
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    meta = {
        **shapes_meta(),
        "architecture": timm_arch("resnet18"),
        "class_names": list("abcde"),
        "explanation_names": list("abcdefg"),
        "explanation_groups": [],
        "class_explanations": np.eye(5, 7).tolist(),
        "preprocessing": {"kind": "imagenet"},
    }
    save_bundle(full, pair, meta)
    save_bundle(half, pair, meta, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = load_bundle(full)[0](x)[0], load_bundle(half)[0](x)[0]
    assert torch.allclose(torch.softmax(a, 1), torch.softmax(b, 1), atol=1e-2)


def test_bundle_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(BundleError, match="no such weights file"):
        read_bundle(tmp_path / "missing.safetensors")
    pair = build_pair(reference_shapes_architecture())
    good = tmp_path / "good.safetensors"
    save_bundle(good, pair, shapes_meta())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BundleError, match="truncated.safetensors.*(truncated|corrupt)"):
        read_bundle(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file at all")
    with pytest.raises(BundleError, match="garbage.safetensors"):
        read_bundle(garbage)
    reference = reference_shapes_architecture()
    wider = {**reference, "main": {**reference["main"], "widths": [6, 5, 5]}}
    mismatched = tmp_path / "mismatched.safetensors"
    save_bundle(mismatched, pair, shapes_meta(wider))  # metadata says widths 6, tensors are width 5
    with pytest.raises(BundleError, match=r"mismatched.safetensors: tensor main\.blocks\.0\..* has shape"):
        load_bundle(mismatched)
    with pytest.raises(BundleError, match="class_explanations must be 4 rows"):
        save_bundle(tmp_path / "bad.safetensors", pair, {**shapes_meta(), "class_explanations": [[1, 0]]})
    assert not (tmp_path / "bad.safetensors").exists()


def test_bundle_loading_never_unpickles(tmp_path):
    """A pickle payload in the file is data, never code: loading fails cleanly instead of running it."""
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(BundleError):
        load_bundle(evil)
    assert not (tmp_path / "pwned").exists()


# -- explainer and command line ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "shapes.safetensors"
    save_bundle(path, build_pair(reference_shapes_architecture()), shapes_meta())
    return path


def test_explainer_explain_and_interventions(shapes_weights):
    explainer = Explainer.load(shapes_weights)
    class_probs = np.array([0.1, 0.1, 0.2, 0.6])
    result = explainer.explain(class_probs, np.array([0.2, 0.1, 0.3, 0.5, 0.6]))
    assert result.predicted_class == "rectangle"
    assert dict(result.ranking)["rectangle"] == pytest.approx(0.5)
    assert (result.verdict.questioned, result.verdict.case, result.preferred_class) == (True, 3, "square")
    assert "Questioned" in result.sentence() and "'square'" in result.sentence()
    forced = explainer.explain(class_probs, np.array([0.2, 0.1, 0.3, 0.5, 0.6]), overrides={2: True, 4: False})
    assert forced.kept_explanations == ["four vertices", "all opposite edges are parallel"]
    assert (forced.verdict.questioned, forced.verdict.case) == (False, None)
    assert "Consistent" in forced.sentence()
    nothing = explainer.explain(class_probs, np.zeros(5))
    assert nothing.verdict.case == 1 and "no kept explanation supports any class" in nothing.sentence()
    assert "none of the classes this model knows" in nothing.sentence()


def test_the_summary_is_what_a_person_reads_of_the_full_json(shapes_weights):
    explainer = Explainer.load(shapes_weights)
    result = explainer.explain(np.array([0.1, 0.15, 0.2, 0.55]), np.array([0.2, 0.1, 0.3, 0.5, 0.6]), top_n=1)
    full, summary = result.to_json(), result.summary_json(top_k=3)
    assert "class_probabilities" not in summary and "explanation_probabilities" not in summary
    assert summary["predicted_class"] == "rectangle" and summary["predicted_probability"] == pytest.approx(0.55)
    assert [name for name, _ in summary["top_classes"]] == ["rectangle", "square", "triangle"]
    assert [p for _, p in summary["top_classes"]] == pytest.approx([0.55, 0.2, 0.15])
    assert summary["explanation_ranking"] == full["explanation_ranking"][:1] and len(full["explanation_ranking"]) == 4
    assert summary["verdict"] == result.sentence() and summary["verdict"].startswith("Questioned")
    shared = set(summary) - {"predicted_probability", "top_classes", "verdict", "explanation_ranking"}
    assert {key: summary[key] for key in shared} == {key: full[key] for key in shared}
    assert len(result.summary_json()["top_classes"]) == 4  # five asked, four classes
    with pytest.raises(ValueError, match="top k 0 is out of range"):
        result.summary_json(top_k=0)


def _write_images(folder: Path) -> list[Path]:
    square = np.full((120, 90), 255, np.uint8)
    square[30:80, 20:70] = 0
    paths = [folder / "square.png", folder / "rgba.png", folder / "broken.png", folder / "blank.png"]
    Image.fromarray(square).save(paths[0])
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[10:40, 10:40] = (0, 0, 255, 255)
    Image.fromarray(rgba).save(paths[1])
    paths[2].write_bytes(paths[0].read_bytes()[:60])
    Image.new("L", (40, 40), 255).save(paths[3])
    return paths


def test_cli_prints_one_json_line_per_image_and_fails_on_bad_ones(shapes_weights, tmp_path):
    paths = _write_images(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "explainer",
            "predict",
            "--weights",
            str(shapes_weights),
            "--top-n",
            "2",
            *map(str, paths),
            str(tmp_path / "missing.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["image"] for r in rows] == [*map(str, paths), str(tmp_path / "missing.png")]
    for row in rows[:2]:
        assert set(row) >= {
            "image",
            "predicted_class",
            "predicted_probability",
            "top_classes",
            "kept_explanations",
            "explanation_ranking",
            "questioned",
            "case",
            "preferred_class",
            "verdict",
            "threshold",
            "top_n",
            "in_scope",
        }
        assert "class_probabilities" not in row and "explanation_probabilities" not in row  # --all-probabilities
        assert row["top_n"] == 2 and len(row["explanation_ranking"]) == 2 and len(row["top_classes"]) == 4
        assert row["top_classes"][0] == [row["predicted_class"], row["predicted_probability"]]
        assert row["verdict"].startswith(("Consistent", "Questioned"))
    assert "cut short or damaged" in rows[2]["error"]
    assert "nothing" in rows[3]["error"].lower() or "blank" in rows[3]["error"].lower()
    assert "no such file" in rows[4]["error"]


def test_cli_all_good_exits_zero_and_bad_weights_exit_two(shapes_weights, tmp_path):
    paths = _write_images(tmp_path)[:2]
    ok = subprocess.run(
        [sys.executable, "-m", "explainer", "predict", "--weights", str(shapes_weights), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 2
    everything = subprocess.run(
        [sys.executable, "-m", "explainer", "predict", "--all-probabilities", "--weights", str(shapes_weights)]
        + [str(paths[0])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    row = json.loads(everything.stdout)
    assert everything.returncode == 0 and row["verdict"] == json.loads(ok.stdout.splitlines()[0])["verdict"]
    assert len(row["explanation_probabilities"]) == 5 and len(row["explanation_ranking"]) == 4
    assert sum(row["class_probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    bad = subprocess.run(
        [sys.executable, "-m", "explainer", "predict", "--weights", str(tmp_path / "none.st"), str(paths[0])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and "no such weights file" in bad.stderr


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"]])
def test_cli_help_says_what_the_tool_does_with_an_example(argv, capsys):
    from explainer.__main__ import main as cli

    with pytest.raises(SystemExit) as done:
        cli(argv)
    text = capsys.readouterr().out
    assert done.value.code == 0 and "Command line" not in text
    assert "Classify images with a trained pair" in text and "explanations" in text
    assert "example:\n  python -m explainer predict --weights weights/birds.safetensors" in text
    assert max(len(line) for line in text.splitlines()) <= 100
