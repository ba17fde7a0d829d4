"""The scope gate ("is this a bird at all?"): library results, JSON, CLI, old files, attaching a gate to a file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scope_fixtures import GOLDFINCH, HORSE, add_scope, fixed_gate, save_imagenet_pth

from bundles import make_birds_bundle, make_shapes_bundle
from explainer.pair.bundle import BundleError, load_bundle, read_bundle, write_bundle
from explainer.pair.scope import (
    IMAGENET_BIRD_CLASSES,
    SCOPE_PREFIX,
    ScopeError,
    explanation_scope,
    imagenet_class_names,
    plain_name,
    scope_tensors,
    validate_scope_metadata,
)
from explainer.verdict.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]


def photo(seed: int = 0, size: tuple[int, int] = (300, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def birds_file(tmp_path_factory):
    return make_birds_bundle(tmp_path_factory.mktemp("scope") / "birds.safetensors")


def run_one(explainer: Explainer, image: Image.Image, **kwargs):
    probs, expls, readings = explainer.infer_with_scope([image])
    return explainer.explain(probs[0], expls[0], scope=readings[0] if readings else None, **kwargs)


# -- the bird classes -------------------------------------------------------------------------------------------------


def test_imagenet_bird_classes_are_the_59_birds_and_nothing_next_to_them():
    names = [plain_name(n) for n in imagenet_class_names()]
    birds = [names[i] for i in IMAGENET_BIRD_CLASSES]
    assert len(birds) == 59 == len(set(IMAGENET_BIRD_CLASSES))
    for expected in (
        "cock",
        "great grey owl",
        "black grouse",
        "black swan",
        "white stork",
        "albatross",
        "hummingbird",
        "king penguin",
        "goldfinch",
    ):
        assert expected in birds
    # the neighbours of each range are animals that are not birds
    assert [names[i] for i in (6, 25, 79, 101, 126, 147)] == [
        "stingray",
        "European fire salamander",
        "centipede",
        "tusker",
        "isopod",
        "grey whale",
    ]


# -- library results --------------------------------------------------------------------------------------------------


def test_out_of_scope_photo_is_questioned_and_named(tmp_path, birds_file):
    explainer = Explainer.load(add_scope(birds_file, HORSE, output=tmp_path / "gated.safetensors"))
    assert explainer.scope is not None
    result = run_one(explainer, photo())
    assert not result.scope.in_scope and result.scope.score < 0.01
    assert result.verdict.questioned
    assert result.scope.looks_like == "sorrel"
    assert "does not look like a bird" in result.sentence() and "a sorrel" in result.sentence()
    data = result.to_json()
    assert data["in_scope"] is False and data["questioned"] is True and 0.0 <= data["scope_score"] < 0.01
    assert data["scope_method"] == "imagenet-birds" and data["scope_threshold"] == pytest.approx(0.2)
    json.dumps(data)


def test_in_scope_photo_keeps_the_pairs_own_verdict(tmp_path, birds_file):
    explainer = Explainer.load(add_scope(birds_file, GOLDFINCH, output=tmp_path / "gated.safetensors"))
    probs, expls, readings = explainer.infer_with_scope([photo(1)])
    result = explainer.explain(probs[0], expls[0], scope=readings[0])
    plain = explainer.explain(probs[0], expls[0])  # no reading: unmeasured, the pair's verdict alone
    assert result.scope.in_scope and result.scope.score > 0.99 and result.scope.looks_like == "goldfinch"
    assert result.verdict == plain.verdict
    assert plain.scope.method == "none" and plain.scope.in_scope


def test_scope_threshold_decides(tmp_path, birds_file):
    """A score just below the threshold is out, at the threshold in (the gate's rule, not the fixture's)."""
    explainer = Explainer.load(add_scope(birds_file, GOLDFINCH, threshold=0.2, output=tmp_path / "g.safetensors"))
    from explainer.pair.scope import ScopeReading

    probs, expls = explainer.infer([photo(2)])
    below = explainer.explain(probs[0], expls[0], scope=ScopeReading(0.199, GOLDFINCH, HORSE, 0.5))
    at = explainer.explain(probs[0], expls[0], scope=ScopeReading(0.2, GOLDFINCH, HORSE, 0.5))
    assert not below.scope.in_scope and below.verdict.questioned and below.scope.looks_like == "sorrel"
    assert at.scope.in_scope and at.scope.looks_like == "goldfinch"


def test_old_birds_file_without_scope_is_always_in_scope(birds_file):
    explainer = Explainer.load(birds_file)
    assert explainer.scope is None
    result = run_one(explainer, photo())
    data = result.to_json()
    assert data["in_scope"] is True and data["scope_score"] == 1.0 and data["scope_method"] == "none"
    assert data["looks_like"] is None


def test_shared_preprocessing_reuses_the_pairs_tensor(tmp_path, birds_file):
    shared = Explainer.load(add_scope(birds_file, GOLDFINCH, output=tmp_path / "shared.safetensors"))
    own = Explainer.load(
        add_scope(birds_file, GOLDFINCH, output=tmp_path / "own.safetensors", share_preprocessing=False)
    )  # the fixture pair uses ImageNet mean/std, not 0.5
    image = photo(3)
    tensor = shared.preprocess(image)
    assert shared.scope_input(image, tensor) is tensor
    other = own.scope_input(image, own.preprocess(image))
    assert other is not None and other.shape == (3, 224, 224) and not torch.equal(other, tensor)


def test_shapes_scope_is_the_pairs_none_of_the_four_judgement(tmp_path):
    explainer = Explainer.load(make_shapes_bundle(tmp_path / "shapes.safetensors"))
    probs = np.array([0.7, 0.1, 0.1, 0.1])
    silent = explainer.explain(probs, np.array([0.2, 0.1, 0.3, 0.45, 0.1]), threshold=0.5)
    assert not silent.scope.in_scope and silent.scope.score == pytest.approx(0.45)
    assert silent.verdict.questioned and silent.verdict.case == 1 and not np.any(silent.ranking_scores > 0)
    speaking = explainer.explain(probs, np.array([0.9, 0.1, 0.0, 0.0, 0.0]), threshold=0.5)
    assert speaking.scope.in_scope and speaking.scope.score == pytest.approx(0.9)
    assert speaking.to_json()["scope_method"] == "explanations"
    # the threshold slider moves the judgement with it; an intervention counts as the mirror's word
    assert explainer.explain(probs, np.array([0.2, 0.1, 0.3, 0.45, 0.1]), threshold=0.4).scope.in_scope
    forced = explainer.explain(probs, np.array([0.2, 0.1, 0.3, 0.45, 0.1]), threshold=0.5, overrides={0: True})
    assert forced.scope.in_scope and forced.scope.score == 1.0


def test_explanation_scope_ignores_explanations_no_class_has():
    prior = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    result = explanation_scope(np.array([0.1, 0.2, 0.99]), prior, 0.5)
    assert not result.in_scope and result.score == pytest.approx(0.2)


# -- the file ---------------------------------------------------------------------------------------------------------


def test_scope_tensors_and_description_must_come_together(tmp_path, birds_file):
    tensors, meta = read_bundle(birds_file)
    gate = fixed_gate(HORSE)
    with pytest.raises(BundleError, match="scope"):
        write_bundle(tmp_path / "a.safetensors", {**tensors, **scope_tensors(gate.network)}, meta)
    with pytest.raises(BundleError, match="scope"):
        write_bundle(tmp_path / "b.safetensors", tensors, {**meta, "scope": gate.description})
    # written by hand, bypassing the check: loading refuses it with the file's name
    from safetensors.torch import save

    path = tmp_path / "c.safetensors"
    path.write_bytes(save({**tensors, **scope_tensors(gate.network)}, metadata={"explainer": json.dumps(meta)}))
    with pytest.raises(BundleError, match="c.safetensors.*scope tensors without a scope description"):
        Explainer.load(path)
    # a plain pair loader still reads a gated file
    pair, loaded_meta = load_bundle(add_scope(birds_file, HORSE, output=tmp_path / "d.safetensors"))
    assert "scope" in loaded_meta and not any(k.startswith(SCOPE_PREFIX) for k in pair.state_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"in_scope_classes": [1000]}, "in_scope_classes"),
        ({"class_names": ["a"]}, "class_names"),
        ({"format": 2}, "format"),
        ({"preprocessing": {"kind": "imagenet"}}, "preprocessing"),
    ],
)
def test_bad_scope_descriptions_are_refused(tmp_path, birds_file, change, message):
    description = {**fixed_gate(HORSE).description, **change}
    with pytest.raises(ScopeError, match=message):
        validate_scope_metadata(description)
    tensors, meta = read_bundle(birds_file)
    with pytest.raises(BundleError, match=message):
        write_bundle(
            tmp_path / "x.safetensors",
            {**tensors, **scope_tensors(fixed_gate(HORSE).network)},
            {**meta, "scope": description},
        )


def test_mismatched_scope_tensor_is_named(tmp_path, birds_file):
    tensors, meta = read_bundle(add_scope(birds_file, HORSE, output=tmp_path / "g.safetensors"))
    key = next(k for k in tensors if k.startswith(SCOPE_PREFIX) and k.endswith("classifier.weight"))
    tensors[key] = tensors[key][:, :3].contiguous()
    from safetensors.torch import save

    path = tmp_path / "bad.safetensors"
    path.write_bytes(save(tensors, metadata={"explainer": json.dumps(meta)}))
    with pytest.raises(BundleError, match="bad.safetensors.*classifier.weight"):
        Explainer.load(path)


# -- command line -----------------------------------------------------------------------------------------------------


def test_cli_json_lines_carry_the_scope(tmp_path, birds_file, capsys):
    from explainer.__main__ import main as cli  # in-process: the CLI's own subprocess test lives in test_models_bundle

    gated = add_scope(birds_file, HORSE, output=tmp_path / "gated.safetensors")
    image = tmp_path / "photo.png"
    photo().save(image)
    shapes = make_shapes_bundle(tmp_path / "shapes.safetensors")
    lines = {}
    for name, weights in (("gated", gated), ("old", birds_file), ("shapes", shapes)):
        capsys.readouterr()
        assert cli(["predict", "--weights", str(weights), str(image), str(tmp_path / "missing.png")]) == 1
        first, second = capsys.readouterr().out.strip().splitlines()
        lines[name] = json.loads(first)
        assert "error" in json.loads(second)
    assert lines["gated"]["in_scope"] is False and lines["gated"]["questioned"] is True
    assert lines["gated"]["looks_like"] == "sorrel"
    assert lines["old"]["in_scope"] is True and lines["old"]["scope_score"] == 1.0
    assert lines["shapes"]["scope_method"] == "explanations" and 0.0 <= lines["shapes"]["scope_score"] <= 1.0


# -- attaching a gate to a file ---------------------------------------------------------------------------------------


class Done:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def attach(capsys):
    """train/attach_scope.py's main(), run in-process (a subprocess would spend most of its time importing torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("attach_scope", ROOT / "train" / "attach_scope.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(*args: str) -> Done:
        capsys.readouterr()
        code = module.main(list(args))
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)

    return run


def test_attach_scope_writes_a_working_gate_and_keeps_the_pair(tmp_path, birds_file, attach):
    pth = save_imagenet_pth(tmp_path / "imagenet.pth", winner=HORSE)
    out = tmp_path / "with-scope.safetensors"
    done = attach(
        "--weights",
        str(birds_file),
        "--pretrained-file",
        str(pth),
        "--model",
        "test_efficientnet",
        "--threshold",
        "0.3",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["threshold"] == 0.3 and summary["storage_dtype"] == "float32"
    before, before_meta = read_bundle(birds_file)
    after, after_meta = read_bundle(out)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pair is copied unchanged
    assert {k: v for k, v in after_meta.items() if k != "scope"} == before_meta
    scope = after_meta["scope"]
    assert scope["threshold"] == 0.3 and len(scope["class_names"]) == 1000
    assert scope["in_scope_classes"] == list(IMAGENET_BIRD_CLASSES)
    assert "training photos" in scope["threshold_selection"]
    result = run_one(Explainer.load(out), photo())
    assert not result.scope.in_scope and result.scope.looks_like == "sorrel"

    # attaching again replaces the gate in place (no second copy), here in float16
    pth2 = save_imagenet_pth(tmp_path / "imagenet2.pth", winner=GOLDFINCH)
    done = attach(
        "--weights",
        str(out),
        "--pretrained-file",
        str(pth2),
        "--model",
        "test_efficientnet",
        "--threshold",
        "0.3",
        "--half",
    )
    assert done.returncode == 0, done.stderr
    tensors, meta = read_bundle(out)
    assert meta["scope"]["storage_dtype"] == "float16"
    assert (
        len(tensors) == len(after)
        and tensors[next(k for k in tensors if k.startswith(SCOPE_PREFIX) and k.endswith("classifier.weight"))].dtype
        == torch.float16
    )
    assert run_one(Explainer.load(out), photo()).scope.in_scope
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_attach_scope_refuses_bad_input_in_plain_words(tmp_path, birds_file, attach):
    shapes = make_shapes_bundle(tmp_path / "shapes.safetensors")
    pth = save_imagenet_pth(tmp_path / "imagenet.pth")
    done = attach("--weights", str(shapes), "--pretrained-file", str(pth), "--model", "test_efficientnet")
    assert done.returncode == 2 and "shapes" in done.stderr and "Traceback" not in done.stderr
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(birds_file).read_bytes())
    done = attach(
        "--weights", str(copy), "--pretrained-file", str(tmp_path / "wrong.pth"), "--model", "test_efficientnet"
    )
    assert done.returncode == 2 and "wrong.pth" in done.stderr and "Traceback" not in done.stderr
    assert copy.read_bytes() == Path(birds_file).read_bytes()  # a failed attach leaves the file as it was


@pytest.mark.parametrize("half", [False, True])
def test_a_frozen_backbone_shares_its_trunk_with_the_gate(tmp_path, attach, half):
    """Only the ImageNet classifier is stored, and reading the main network's features gives the full network's
    answer on the same input."""
    from scope_fixtures import fixed_answer_network, make_frozen_birds_bundle

    imagenet = fixed_answer_network(HORSE, seed=3)
    with torch.no_grad():  # a classifier that depends on the image, so that equal answers mean something
        imagenet.get_classifier().weight.normal_(0, 0.5)
        imagenet.get_classifier().bias.zero_()
    pth = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), pth)
    frozen = make_frozen_birds_bundle(tmp_path / "frozen.safetensors", imagenet, half=half)
    done = attach(
        "--weights",
        str(frozen),
        "--pretrained-file",
        str(pth),
        "--model",
        "test_efficientnet",
        "--threshold",
        "0.3",
        "--output",
        str(tmp_path / "main.safetensors"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trunk"] == "main"
    tensors, meta = read_bundle(tmp_path / "main.safetensors")
    stored = sorted(k for k in tensors if k.startswith(SCOPE_PREFIX))
    assert stored == ["scope.classifier.bias", "scope.classifier.weight"]
    assert meta["scope"]["trunk"] == "main" and meta["scope"]["preprocessing"] == meta["preprocessing"]
    done = attach(
        "--weights",
        str(frozen),
        "--pretrained-file",
        str(pth),
        "--model",
        "test_efficientnet",
        "--threshold",
        "0.3",
        "--trunk",
        "own",
        "--output",
        str(tmp_path / "own.safetensors"),
    )
    assert done.returncode == 0, done.stderr
    shared, own = Explainer.load(tmp_path / "main.safetensors"), Explainer.load(tmp_path / "own.safetensors")
    images = [photo(seed) for seed in range(4)]
    _, _, shared_readings = shared.infer_with_scope(images)
    _, _, own_readings = own.infer_with_scope(images)
    shared_probs, shared_expls = shared.infer([photo(0)])
    with_gate = shared.infer_with_scope([photo(0)])
    assert np.allclose(with_gate[0], shared_probs, atol=1e-6) and np.allclose(with_gate[1], shared_expls, atol=1e-6)
    scores = [r.score for r in shared_readings]
    assert len(set(np.round(scores, 6))) > 1  # the fixture's answer depends on the image
    assert scores == pytest.approx([r.score for r in own_readings], abs=1e-5)
    assert [r.top_class for r in shared_readings] == [r.top_class for r in own_readings]


def test_a_trained_backbone_keeps_its_own_gate(tmp_path, birds_file, attach):
    from scope_fixtures import fixed_answer_network, make_frozen_birds_bundle

    imagenet = fixed_answer_network(HORSE)
    frozen = make_frozen_birds_bundle(tmp_path / "frozen.safetensors", imagenet)
    tensors, meta = read_bundle(frozen)
    key = next(k for k in tensors if k.startswith("main.conv_stem"))
    tensors[key] = tensors[key] + 0.01  # one step of training is enough to make the trunks differ
    write_bundle(frozen, tensors, meta)
    pth = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), pth)
    done = attach("--weights", str(frozen), "--pretrained-file", str(pth), "--model", "test_efficientnet")
    assert done.returncode == 0 and json.loads(done.stdout)["trunk"] == "own"
    assert "conv_stem" in json.loads(done.stdout)["trunk_check"]
    done = attach(
        "--weights", str(frozen), "--pretrained-file", str(pth), "--model", "test_efficientnet", "--trunk", "main"
    )
    assert done.returncode == 2 and "conv_stem" in done.stderr


# -- the evaluation script --------------------------------------------------------------------------------------------


def test_evaluate_scope_picks_on_training_photos_and_reports_both_sides(tmp_path):
    """On a CUB-format fixture with a fixed-answer "ImageNet" file: the pick uses the training photos only, the test
    photos and scikit-image's photos are reported with every score."""
    import importlib.util

    from cub_fixture import make_cub_fixture

    root = make_cub_fixture(tmp_path / "cub")
    pth = save_imagenet_pth(tmp_path / "imagenet.pth", winner=GOLDFINCH)
    spec = importlib.util.spec_from_file_location("evaluate_scope", ROOT / "train" / "evaluate_scope.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    common = ["--pretrained-file", str(pth), "--model", "test_efficientnet", "--data", str(root), "--workers", "0",
              "--threads", "1", "--out", str(out)]  # fmt: skip
    assert module.main([*common, "--pick-threshold"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["picked_threshold"]["threshold"] >= 0.99  # every photo scores ~1: the largest multiple of 0.01
    assert results["picked_threshold"]["train_in_scope"] == 1.0
    assert "cub_test" not in results  # picking never looks at the test photos
    assert module.main([*common, "--threshold", "0.5"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cub_test"]["share_in_scope"] == 1.0 and results["skimage"]["photos"] == 21
    assert results["skimage"]["share_out_of_scope"] == 0.0  # this fixture calls everything a goldfinch
    assert "| astronaut | photo |" in (out / "report.md").read_text()
    assert module.pick_threshold(np.array([0.05] + [0.5] * 199)) == 0.5  # 99.5% kept: one low photo may fall out
    assert module.pick_threshold(np.array([0.05, 0.05] + [0.5] * 198)) == 0.05
