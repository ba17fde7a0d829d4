"""CPU inference latency of a weights file at batch 1: network alone and with preprocessing, per thread count.

    .venv/bin/python train/bench_latency.py --weights weights/shapes.safetensors

Prints median and 90th-percentile milliseconds per image as JSON (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from explainer.verdict.predictor import Explainer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    explainer = Explainer.load(args.weights)
    image = explainer.task_spec.sample_image()  # a black rectangle, or a noise photo
    tensor = explainer.preprocess(image)[None]
    results = {"weights": args.weights}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(max(10, args.repeats // 10)):
            explainer.infer_tensors(tensor)
        network, full = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            explainer.infer_tensors(tensor)
            network.append(time.perf_counter() - start)
            start = time.perf_counter()
            explainer.infer_tensors(explainer.preprocess(image)[None])
            full.append(time.perf_counter() - start)
        results[f"{threads}_threads"] = {
            "network_ms_median": round(1000 * float(np.median(network)), 2),
            "network_ms_p90": round(1000 * float(np.percentile(network, 90)), 2),
            "with_preprocessing_ms_median": round(1000 * float(np.median(full)), 2),
        }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
