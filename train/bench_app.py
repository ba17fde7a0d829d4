"""Benchmarks of the web app on this machine (CPU); prints numbers, asserts nothing.

    .venv/bin/python train/bench_app.py [--shapes-weights weights/shapes.safetensors]
                                        [--birds-weights weights/birds.safetensors] [--repeats 30]
                                        [--repeats-resnet 10] [--skip-server] [--skip-resnet] [--tasks birds]
    .venv/bin/python train/bench_app.py --compare-birds A.safetensors B.safetensors [...] [--repeats 60]

``--compare-birds`` times only the whole birds handler of several files, taking turns in one run, with each median as a
ratio of the first file's: separate runs drift by a third on this shared machine.

The birds handler's figure (issue 11's goal: <= 150 ms median on this 2-core machine) includes the scope gate when the
weights file has one (``train/attach_scope.py``): the whole handler, then its parts (the pair alone, the gate alone,
pair + gate as served) are printed. It is the whole view (issue 19's goal: <= 150 ms median): the handler writes the
preview and the "Where" panel's two heatmap pictures as files, as served; the panel's part and choosing another
explanation are printed after it.

Measures, in one run:
1. cold start: from launching ``python app.py`` to its first answer through gradio_client (shapes image), then the
   birds photo and the slider round trip (``/birds_explain``) through the real server, and 50 simultaneous requests
   (all must be answered; the server's resident memory before and after);
2. per-image latency of the handlers (open, preprocess, both networks with their heatmaps, the scope gate, charts, the
   "Where" pictures), shapes and birds, with one torch thread as app.py serves, and of the networks alone with one
   thread and with torch's default; the "Where" panel's part, and choosing another explanation from the cache;
3. slider re-render latency (post-processing + three charts + JSON) for the real birds size, 200 classes x 312
   explanations, from cached outputs (the app's budget: 50 ms);
4. a timm ResNet50 mirror pair (200 classes, 312 explanations, add join) against one ResNet50 forward, 224 px,
   batch 1, torch.inference_mode, contiguous and channels_last, one thread and torch's default, the two timed in
   turn so that both see the same background load (target: pair <= 2.1x single and <= 300 ms median).
Weights not given (or absent from weights/) are replaced by untrained stand-ins of the same architecture family:
the reference shapes pair, and a 200 x 312 timm ResNet50 pair for birds (the speed does not depend on training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

import webapp
from explainer.inputs.imagecheck import check_image
from explainer.inputs.transforms import reference_preprocessing
from explainer.pair.bundle import load_bundle_with_scope, save_bundle
from explainer.pair.models import build_pair, reference_shapes_architecture
from explainer.tasks import BIRDS, SHAPES
from explainer.verdict.predictor import Explainer
from webapp.process import resident_bytes

# Set before Gradio or huggingface_hub is first imported (both read them at import; this module imports neither).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]


def summary(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   min {ms[0]:7.1f} ms   (n={len(ms)})"


def interleaved(fns: list[Callable[[], Any]], repeats: int, warmup: int = 2) -> list[list[float]]:
    """Each function timed ``repeats`` times, taking turns, so a change of the machine's load hits them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, row in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            row.append(time.perf_counter() - start)
    return times


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    return interleaved([fn], repeats, warmup)[0]


# -- stand-in weights --------------------------------------------------------------------------------------------------


def birds_size_metadata(architecture: dict[str, Any], n_classes: int = 200, n_explanations: int = 312) -> dict:
    """CUB-sized metadata: 28 exclusive groups, a continuous prior, weighted ranking, readable names."""
    rng = np.random.default_rng(0)
    groups = [list(map(int, g)) for g in np.array_split(np.arange(n_explanations), 28)]
    names = [f"attribute group {g + 1}: value {i + 1}" for g, group in enumerate(groups) for i in range(len(group))]
    class_names = [f"Species {i + 1:03d}" for i in range(n_classes)]
    meta = BIRDS.bundle_metadata(
        architecture,
        class_explanations=rng.random((n_classes, n_explanations)) ** 3,
        preprocessing=reference_preprocessing(),
        defaults={"threshold": 0.8, "top_n": 10},
        vocabulary={
            "class_names": class_names,
            "class_raw_names": class_names,
            "explanation_names": [n.replace(" ", "_") for n in names],
            "explanation_display_names": names,
            "explanation_groups": groups,
        },
    )
    return {**meta, "description": "Untrained benchmark stand-in."}


def standin_shapes(path: Path) -> Path:
    torch.manual_seed(0)
    architecture = reference_shapes_architecture()
    save_bundle(path, build_pair(architecture), SHAPES.bundle_metadata(architecture))
    return path


def standin_birds(path: Path) -> Path:
    architecture = {"family": "timm", "model_name": "resnet50", "n_classes": 200, "n_explanations": 312, "join": "add"}
    torch.manual_seed(0)
    save_bundle(path, build_pair(architecture, verify=False), birds_size_metadata(architecture), half=True)
    return path


def pick_weights(given: str | None, default: Path, make: Callable[[Path], Path], scratch: Path) -> tuple[Path, str]:
    if given:
        return Path(given), "given"
    if default.is_file():
        return default, "weights/"
    return make(scratch / default.name), "untrained stand-in"


# -- test images -------------------------------------------------------------------------------------------------------


def sample_images(folder: Path) -> tuple[Path, Path]:
    drawing = Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(drawing).polygon([(100, 400), (420, 400), (260, 120)], outline="black", width=6)
    shape_path = folder / "triangle.png"
    drawing.save(shape_path)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:375, 0:500]
    photo = np.stack([120 + 80 * np.sin(x / 17), 110 + 70 * np.cos(y / 13), 90 + 60 * np.sin((x + y) / 23)], -1)
    photo_path = folder / "photo.jpg"
    Image.fromarray(np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)).save(photo_path)
    return shape_path, photo_path


# -- 1. the real server ------------------------------------------------------------------------------------------------


def bench_server(shapes_weights: Path, birds_weights: Path, shape_image: Path, photo: Path, repeats: int) -> None:
    import socket

    from gradio_client import Client, handle_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "EXPLAINER_SHAPES_WEIGHTS": str(shapes_weights),
        "EXPLAINER_BIRDS_WEIGHTS": str(birds_weights),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
    }
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = None
        while client is None:
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited with {server.returncode}: {server.stderr.read()[-2000:]}")
            try:
                client = Client(url, verbose=False, download_files=False)
            except Exception:
                time.sleep(0.2)
        ready = time.perf_counter() - started
        result = client.predict(handle_file(str(shape_image)), api_name="/shapes_image")[0]
        first = time.perf_counter() - started
        assert "predicted_class" in result, result
        print(f"cold start: server answering HTTP after {ready:.1f} s; first shapes answer after {first:.1f} s")
        shape_rt = timed(lambda: client.predict(handle_file(str(shape_image)), api_name="/shapes_image"), repeats)
        print(f"shapes image, client round trip:        {summary(shape_rt)}")
        bird_rt = timed(lambda: client.predict(handle_file(str(photo)), api_name="/birds_image"), repeats)
        print(f"birds photo, client round trip:         {summary(bird_rt)}")
        thresholds = iter(np.linspace(0.3, 0.95, 10 * (repeats + 2)).tolist())
        explain_rt = timed(
            lambda: client.predict(next(thresholds), 10, 10, False, [], [], api_name="/birds_explain"), repeats
        )
        print(f"birds slider move, client round trip:   {summary(explain_rt)}")
        burst = Client(url, verbose=False, download_files=False, max_workers=50)
        before = resident_bytes(server.pid) / 2**20
        start = time.perf_counter()
        jobs = [
            burst.submit(
                handle_file(str(photo if i % 2 else shape_image)), api_name="/birds_image" if i % 2 else "/shapes_image"
            )
            for i in range(50)
        ]
        answers = [job.result(timeout=600)[0] for job in jobs]
        ok = sum("predicted_class" in answer for answer in answers)
        took = time.perf_counter() - start
        print(
            f"50 simultaneous requests (25 shapes, 25 birds): {ok}/50 answered in {took:.1f} s; "
            f"server memory {before:.0f} -> {resident_bytes(server.pid) / 2**20:.0f} MiB"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- 2 and 3. the handlers ---------------------------------------------------------------------------------------------


def describe_scope(explainer: Explainer) -> str:
    gate = explainer.scope
    if gate is None:
        return "no scope network"
    model = gate.description["architecture"]["model_name"]
    if gate.uses_main_trunk:
        return f"scope: {model}'s ImageNet classifier on the main network's pooled features (trunk shared)"
    shared = "shared input" if gate.shares_input_with(explainer.preprocessing) else "its own preprocessing"
    return f"scope: its own {model} ({shared})"


def bench_handlers(
    shapes_weights: Path,
    birds_weights: Path,
    shape_image: Path,
    photo: Path,
    repeats: int,
    tasks: tuple[str, ...] = ("shapes", "birds"),
    previews: Path | None = None,
) -> None:
    models = {
        task: webapp.load_task_model(task, str(weights), ROOT / "weights")
        for task, weights in (("shapes", shapes_weights), ("birds", birds_weights))
        if task in tasks
    }
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as app.py serves
    for task, image in (("shapes", shape_image), ("birds", photo)):
        if task in models:
            bench_task_handlers(task, models[task], image, repeats, previews, default_threads)
    torch.set_num_threads(default_threads)
    bench_birds_sized_rerender(repeats)


def bench_folded_batchnorm(
    explainer: Explainer, path: str, tensor: torch.Tensor, scope_batch: torch.Tensor | None, repeats: int
) -> None:
    """Pair + gate as served (BatchNorm folded into the convolutions at load) against the same file's networks as
    stored, taking turns in one run."""
    pair, meta, scope = load_bundle_with_scope(path)
    stored = Explainer(pair, meta, "cpu", scope)
    folded, kept = interleaved(
        [lambda: explainer.infer_tensors_with_scope(tensor, scope_batch),
         lambda: stored.infer_tensors_with_scope(tensor, scope_batch)], repeats,
    )  # fmt: skip
    ratio = statistics.median(folded) / statistics.median(kept)
    print(f"  pair + gate, BatchNorm as stored:      {summary(kept)}")
    print(f"  the same, BatchNorm folded (served):   {summary(folded)}; ratio of medians {ratio:.2f}")


def bench_task_handlers(
    task: str, model: webapp.TaskModel, image: Path, repeats: int, previews: Path | None, default_threads: int
) -> None:
    """One task's handler on one image, whole and in parts (torch at one thread, as served, unless said)."""
    if not model.available:
        print(f"{task}: {model.problem}")
        return
    app = webapp.TaskApp(model, preview_folder=previews)  # files, as served: preview and heatmap pictures
    arch = model.explainer.meta["architecture"]
    name = arch.get("model_name", arch.get("family"))
    out = app.classify_image(str(image))
    assert out.cache is not None, out.status
    print(
        f"{task} ({name}, {app.n_classes} classes x {app.n_explanations} explanations, {model.parameters:,} "
        f"parameters; {describe_scope(model.explainer)})"
    )
    whole = timed(lambda: app.classify_image(str(image)), repeats)
    print(f"  per image, whole view (handler, Where panel included), 1 thread: {summary(whole)}")
    explainer = model.explainer
    opened = explainer.check_image(Image.open(image))

    def prepare() -> None:
        checked = explainer.check_image(check_image(str(image)))
        explainer.scope_input(checked, explainer.preprocess(checked))

    print(f"  open + check + preprocess (+ gate's):  {summary(timed(prepare, repeats))}")
    tensor = explainer.preprocess(opened)[None]
    if explainer.scope is not None:
        scope_in = explainer.scope_input(opened, tensor[0])
        scope_batch = None if scope_in is None else scope_in[None]
        print(
            f"  pair + gate as served, 1 thread:       "
            f"{summary(timed(lambda: explainer.infer_tensors_with_scope(tensor, scope_batch), repeats))}"
        )
        if scope_batch is not None:
            print(
                f"  the gate alone, 1 thread:              "
                f"{summary(timed(lambda: explainer.scope.read_tensors(scope_batch), repeats))}"
            )
        bench_folded_batchnorm(explainer, model.source, tensor, scope_batch, repeats)
    for count in (1, default_threads) if default_threads > 1 else (1,):
        torch.set_num_threads(count)
        print(
            f"  per image, both networks, {count} thread{'s' if count > 1 else ' '}:  "
            f"{summary(timed(lambda: model.explainer.infer_tensors(tensor), repeats))}"
        )
    torch.set_num_threads(1)
    cache = out.cache
    moves = iter(np.linspace(0.05, 0.95, repeats + 2).tolist())
    print(
        f"  slider re-render (cached outputs):     "
        f"{summary(timed(lambda: app.rerender(cache, next(moves), None, None, False), repeats))}"
    )
    bench_where(app, cache, opened, repeats)


def bench_birds_sized_rerender(repeats: int) -> None:
    """A slider move at the real birds size, 200 classes x 312 explanations, with an intervention, from cached
    outputs (no network: the app's 50 ms budget is the post-processing, the three charts and the JSON)."""
    meta = birds_size_metadata({"family": "timm", "model_name": "resnet50", "n_classes": 200, "n_explanations": 312})
    app = webapp.TaskApp(webapp.TaskModel("birds", explainer=Explainer(torch.nn.Identity(), meta)))
    rng = np.random.default_rng(0)
    cache = {
        "task": "birds",
        "class_probs": rng.dirichlet(np.ones(200)).astype(np.float32),
        "explanation_probs": rng.random(312).astype(np.float32),
    }
    moves = iter(np.linspace(0.05, 0.95, 10 * repeats).tolist())
    times = timed(lambda: app.rerender(cache, next(moves), 10, 10, False, [3, 40], [100]), 5 * repeats)
    out = app.rerender(cache, 0.5, 10, 10, False)
    plots = (out.class_plot, out.explanation_plot, out.ranking_plot)
    size = sum(len(p.plot) for p in plots) + len(json.dumps(out.result))
    print("slider re-render, 200 classes x 312 explanations, with an intervention (budget 50 ms):")
    print(f"  handler (explain + 3 charts + JSON):   {summary(times)}   payload {size / 1024:.0f} KiB")


def bench_where(app: webapp.TaskApp, cache: dict[str, Any], image: Image.Image, repeats: int) -> None:
    """The "Where" panel's share of the whole view, and choosing explanations in turn from the cache."""
    from webapp import heatmaps

    explainer = app.model.explainer
    probs, expls, where = explainer.where(image)
    predicted = int(np.argmax(probs))

    def panel() -> None:  # what the panel adds to a classification: the cache entry and two pictures as files
        packed = heatmaps.pack(where, predicted, image)
        app._picture(packed, packed["class_map"])
        app._picture(packed, packed["explanation_maps"][int(np.argmax(expls))])

    print(f"  the Where panel's part of it:          {summary(timed(panel, repeats))}")
    threshold = float(np.sort(expls)[-min(3, expls.size)])  # a threshold that keeps a few explanations
    kept = explainer.explain(cache["class_probs"], cache["explanation_probs"], threshold).kept_explanations
    names = iter(kept * (repeats + 2))
    chosen = timed(lambda: app.show_where(cache, next(names), threshold), repeats)
    print(f"  choosing an explanation (cached, {len(kept)} kept): {summary(chosen)}")
    keeping = timed(lambda: app.rerender(cache, threshold, None, None, False, None, None, kept[0]), repeats)
    print(f"  slider move keeping the chosen one:    {summary(keeping)}")


def bench_compare_birds(files: list[str], photo: Path, repeats: int, previews: Path) -> None:
    """The whole birds handler (one thread, as served) of several weights files, timed in turn so that a change of
    the machine's load hits them alike; each median also as a ratio of the first file's."""
    torch.set_num_threads(1)
    apps = []
    for path in files:
        model = webapp.load_task_model("birds", path, ROOT / "weights")
        if not model.available:
            raise SystemExit(f"{path}: {model.problem}")
        apps.append(webapp.TaskApp(model, preview_folder=previews))
    rows = interleaved([lambda app=app: app.classify_image(str(photo)) for app in apps], repeats)
    base = statistics.median(rows[0])
    print(f"birds whole handler, {len(files)} files taking turns, 1 thread:")
    for path, row in zip(files, rows, strict=True):
        print(f"  {path}: {summary(row)}; ratio of medians {statistics.median(row) / base:.2f}")


# -- 4. the pair against its main network ------------------------------------------------------------------------------


def bench_resnet50_pair(repeats: int) -> None:
    from explainer.pair.models import create_timm_main

    architecture = {"family": "timm", "model_name": "resnet50", "n_classes": 200, "n_explanations": 312, "join": "add"}
    torch.manual_seed(0)
    pair = build_pair(architecture, verify=False).eval()
    single = create_timm_main("resnet50", 200).eval()
    x = torch.randn(1, 3, 224, 224)
    default_threads = torch.get_num_threads()
    print(
        "ResNet50 pair (200 classes, 312 explanations, add join) vs single ResNet50, 224 px, batch 1, "
        "torch.inference_mode:"
    )
    for threads in (1, default_threads) if default_threads > 1 else (1,):
        torch.set_num_threads(threads)
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            pair_l, single_l, x_l = pair.to(memory_format=fmt), single.to(memory_format=fmt), x.to(memory_format=fmt)
            t_single, t_pair = [], []
            with torch.inference_mode():
                for _ in range(2):  # warm-up
                    single_l(x_l), pair_l(x_l)
                for _ in range(repeats):  # interleaved, so that both see the same background load
                    t_single += timed(lambda: single_l(x_l), 1, warmup=0)
                    t_pair += timed(lambda: pair_l(x_l), 1, warmup=0)
            ratio = statistics.median([p / s for p, s in zip(t_pair, t_single, strict=False)])
            verdict = (
                f"ratio <= 2.1x: {'yes' if ratio <= 2.1 else 'no'}, "
                f"median <= 300 ms: {'yes' if statistics.median(t_pair) <= 0.3 else 'no'}"
            )
            where = f"{threads} thread{'s' if threads > 1 else ''}, {layout}"
            print(f"  {where:27s} single: {summary(t_single)}")
            print(f"  {where:27s} pair:   {summary(t_pair)}   median ratio {ratio:.2f}x ({verdict})")
    torch.set_num_threads(default_threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes-weights", default=None, help="default: weights/shapes.safetensors or a stand-in")
    parser.add_argument("--birds-weights", default=None, help="default: weights/birds.safetensors or a stand-in")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--repeats-resnet", type=int, default=10, help="repeats of the ResNet50 comparison")
    parser.add_argument("--skip-server", action="store_true", help="skip the cold start and round trips")
    parser.add_argument("--skip-resnet", action="store_true", help="skip the ResNet50 pair comparison")
    parser.add_argument("--tasks", default="shapes,birds", help="comma list of the handlers to time")
    parser.add_argument(
        "--compare-birds",
        nargs="+",
        metavar="FILE",
        help="only the whole birds handler of these weights files, taking turns (ratios to the first)",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # numbers appear as they are measured, even through a pipe
    load = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-app-") as scratch_name:
        scratch = Path(scratch_name)
        shapes_weights, shapes_from = pick_weights(
            args.shapes_weights, ROOT / "weights" / "shapes.safetensors", standin_shapes, scratch
        )
        birds_weights, birds_from = pick_weights(
            args.birds_weights, ROOT / "weights" / "birds.safetensors", standin_birds, scratch
        )
        print(f"shapes weights: {shapes_weights} ({shapes_from}); birds weights: {birds_weights} ({birds_from})")
        shape_image, photo = sample_images(scratch)
        if args.compare_birds:
            bench_compare_birds(args.compare_birds, photo, args.repeats, scratch / "previews")
            return 0
        if not args.skip_server:
            bench_server(shapes_weights, birds_weights, shape_image, photo, args.repeats)
        bench_handlers(
            shapes_weights,
            birds_weights,
            shape_image,
            photo,
            args.repeats,
            tuple(t.strip() for t in args.tasks.split(",")),
            scratch / "previews",
        )
    if not args.skip_resnet:
        bench_resnet50_pair(args.repeats_resnet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
