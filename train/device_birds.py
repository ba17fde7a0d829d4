"""The birds main networks on a lent GPU, in one call: candidates compared on the validation photos, the best trained
on all training photos, and the run brought back to finish here (mirror, gate, test photos) on the CPU.

Run it on the lent machine after the parts of ``train/pack_cub.py`` were unpacked there (docs/training.md, "On a lent
GPU"). For each ``--candidate`` (options of ``train/train_birds.py``) it trains step 1 (``main-val``) in its own run
folder and reads the validation top-1 of the weights the step chose; the best candidate goes on to the final main
network, the test view and the classifier refit (``--stop-after head-final``). A candidate is skipped when the time
the first one took says it would leave too little of ``--deadline`` for the final steps. The best candidate's run
folder, less the training checkpoints (``last.pt``: the finished steps resume from ``main.safetensors``), is tarred
into ``--results`` in pieces under 16 MiB, with ``choice.json`` and the log. Back here:

    cat FILES_AT/run.tar.* | tar -xf -
    python train/train_birds.py --data ../shared/data/cub-200 --pretrained-file .local/lite2.pth \\
        --scope-file .local/lite0.pth --out runs/gpu/cN --output runs/gpu/cN/birds.safetensors <cN's options>

(``choice.json`` gives cN and its options) trains the mirror and the gate and evaluates the test photos once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIECE = 15 * 2**20  # bytes of one piece of the returned run (the device returns files of at most 16 MiB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/cub-200")
    p.add_argument("--pretrained-file", default=".local/lite2.pth")
    p.add_argument("--out", default="runs/gpu", help="one run folder per candidate: c1, c2...")
    p.add_argument("--candidate", action="append", required=True,
                   help="options of train_birds.py for one candidate, in one string (repeatable)")  # fmt: skip
    p.add_argument("--common", default="--device cuda --workers 14 --amp",
                   help="options every candidate gets (the device, loader workers, autocast)")  # fmt: skip
    p.add_argument("--deadline", type=float, default=480.0, help="seconds this call may take in all")
    p.add_argument("--results", required=True, help="folder the run comes back in ($OUT on the lent machine)")
    p.add_argument("--root", default=str(ROOT), help="where the parts were unpacked (default: this checkout)")
    return p.parse_args(argv)


def train(args: argparse.Namespace, options: list[str], folder: Path, stop_after: str, log) -> float:
    """One ``train_birds.py`` run up to ``stop_after``; its output goes to ``log``; returns its seconds."""
    command = [sys.executable, str(ROOT / "train" / "train_birds.py"), "--data", args.data, "--pretrained-file",
               args.pretrained_file, "--out", str(folder), *shlex.split(args.common), *options,
               "--stop-after", stop_after]  # fmt: skip
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    started = time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"error: {folder.name} failed (exit {done.returncode}); see the log")
    return time.time() - started


def validation_top1(folder: Path) -> float:
    """The validation top-1 of the weights step 1 chose (raw or averaged), after its last epoch."""
    summary = json.loads((folder / "main-val" / "summary.json").read_text())
    return float(summary["history"][-1][f"{summary['weights']}_val_top1"])


def bring_back(folder: Path, results: Path) -> list[str]:
    """``folder`` less its ``last.pt`` files as a tar in pieces ``run.tar.aa``, ``.ab``... under ``results``."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(
            folder, arcname=folder.as_posix(), filter=lambda info: None if info.name.endswith("last.pt") else info
        )
    data, names = buffer.getvalue(), []
    for k in range(0, len(data), PIECE):
        name = "run.tar." + chr(ord("a") + k // PIECE // 26) + chr(ord("a") + k // PIECE % 26)
        (results / name).write_bytes(data[k : k + PIECE])
        names.append(name)
    return names


def resume_command(args: argparse.Namespace, folder: Path, options: str) -> str:
    """The command that finishes the run here: the candidate's options and those of ``--common`` that enter the
    main network's configuration (the device, workers and threads do not)."""
    common, kept = shlex.split(args.common), []
    skip = False
    for token in common:
        if skip:
            skip = False
        elif token in ("--device", "--workers", "--threads"):
            skip = True
        elif not token.startswith(("--device=", "--workers=", "--threads=")):
            kept.append(token)
    here = ["python", "train/train_birds.py", "--data", "../shared/data/cub-200", "--pretrained-file",
            args.pretrained_file, "--scope-file", ".local/lite0.pth", "--out", folder.as_posix(), "--output",
            (folder / "birds.safetensors").as_posix()]  # fmt: skip
    return shlex.join([*here, *shlex.split(options), *kept])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results = Path(args.results).resolve()
    os.chdir(args.root)  # relative paths are from where the parts were unpacked, here and in the tar that comes back
    out = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict] = {}
    with open(results / "log.txt", "a") as log:
        first_seconds = None
        for k, text in enumerate(args.candidate, start=1):
            name = f"c{k}"
            elapsed = time.time() - started
            # a candidate and the final steps each take about what the first candidate took, and a bit more
            if first_seconds is not None and elapsed + 2.5 * first_seconds > args.deadline:
                scores[name] = {
                    "options": text,
                    "skipped": f"{elapsed:.0f} s spent; the first took {first_seconds:.0f}",
                }
                print(f"{name}: skipped (time)", flush=True)
                continue
            seconds = train(args, shlex.split(text), out / name, "main-val", log)
            first_seconds = first_seconds or seconds
            scores[name] = {"options": text, "validation_top1": validation_top1(out / name), "seconds": round(seconds)}
            print(
                f"{name}: validation top-1 {scores[name]['validation_top1']:.4f} ({seconds:.0f} s): {text}", flush=True
            )
        trained = {name: row for name, row in scores.items() if "validation_top1" in row}
        best = max(trained, key=lambda name: trained[name]["validation_top1"])
        seconds = train(args, shlex.split(scores[best]["options"]), out / best, "head-final", log)
        print(f"{best} chosen; final steps {seconds:.0f} s", flush=True)
    choice = {"chosen": best, "options": scores[best]["options"], "common": args.common, "candidates": scores,
              "seconds": round(time.time() - started),
              "finish_here": resume_command(args, out / best, scores[best]["options"])}  # fmt: skip
    (out / best / "choice.json").write_text(json.dumps(choice, indent=2))
    (results / "choice.json").write_text(json.dumps(choice, indent=2))
    pieces = bring_back(out / best, results)
    print(f"brought back: {', '.join(pieces)} ({time.time() - started:.0f} s in all)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
