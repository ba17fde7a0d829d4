"""Pack CUB-200-2011 photos into parts small enough to travel to a lent GPU machine, one part per call.

A lent machine takes at most 64 MiB of working tree a call (the project's own files, about 25 MiB, included) and the
data folder beside the checkout does not travel. The official training photos alone are about 80 MB, so they go in
parts: each a zip of stored files (the photos' own bytes: nothing re-encoded, so the network trains on exactly the
photos it would train on here) under the paths they get on that machine, relative to the checkout's root
(``data/cub-200/...``, and any ``--add`` file at its own path, e.g. ``.local/lite2.pth``). Every metadata file of the
data folder goes in the first part. Unpack a part there with ``python3 -m zipfile -e PART .``; ``data/`` and
``.local/`` are ignored by git, so what earlier calls unpacked stays on the machine while it is held.

    python train/pack_cub.py --data ../shared/data/cub-200 --out .pack --add .local/lite2.pth

writes ``.pack/part-1.zip``, ``part-2.zip``... (each at most ``--part-mib``) and ``.pack/pack.json`` (what each part
holds). The device steps that use them are in docs/training.md ("On a lent GPU").
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

from explainer.birds import cub
from explainer.pair.bundle import atomic_write_bytes

ZIP_OVERHEAD = 200  # bytes a stored entry adds beside its data (two headers with its name), an upper bound here


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--out", required=True, help="folder for the parts (its old part-*.zip are replaced)")
    p.add_argument("--photos", choices=("train", "test", "all"), default="train", help="which official photos")
    p.add_argument("--part-mib", type=float, default=38.0,
                   help="largest part, in MiB (64 less the checkout's tracked files, less a margin)")  # fmt: skip
    p.add_argument("--add", action="append", default=[],
                   help="a file to carry too, unpacked at this same relative path (repeatable)")  # fmt: skip
    p.add_argument("--dest", default="data/cub-200", help="where the data folder is unpacked, from the checkout's root")
    return p.parse_args(argv)


def plan(data: Path, photos: str, adds: list[str], dest: str) -> list[tuple[Path, str]]:
    """(file here, path in the zip) for every file to carry: added files, metadata, then the photos in id order."""
    root = cub.resolve_cub_folder(data)
    meta = cub.read_cub(data, image_level_attributes=False)
    top = root.parent if root.name == cub.CUB_FOLDER else root  # the folder --data names, as the archive extracts
    inside = Path(dest) / root.relative_to(top)
    files: list[tuple[Path, str]] = []
    for add in adds:
        path = Path(add)
        if not path.is_file():
            raise SystemExit(f"error: {add} is not a file")
        if path.is_absolute() or ".." in path.parts:
            raise SystemExit(f"error: {add}: give a path inside the checkout, relative to its root")
        files.append((path, path.as_posix()))
    # metadata: every file of the CUB folder outside images/, and what the archive puts beside it (attributes.txt;
    # the shared copy's extras/), not whatever else the folder above holds
    beside = [top / "attributes.txt", *sorted((top / "extras").rglob("*"))] if top != root else []
    for path in [*sorted(root.rglob("*")), *beside]:
        if path.is_file() and (root / "images") not in path.parents:
            files.append((path, (Path(dest) / path.relative_to(top)).as_posix()))
    chosen = {"train": meta.train_indices, "test": meta.test_indices}.get(photos)
    positions = range(len(meta.images)) if chosen is None else chosen
    missing = [meta.image_path(int(i)) for i in positions if not meta.image_path(int(i)).is_file()]
    if missing:
        raise SystemExit(f"error: {len(missing)} listed photos are missing, e.g. {missing[0].relative_to(root)}")
    for i in positions:
        relative = meta.images[int(i)].relative_path
        files.append((root / "images" / relative, (inside / "images" / relative).as_posix()))
    return files


def split_parts(files: list[tuple[Path, str]], limit: int) -> list[list[tuple[Path, str]]]:
    """Consecutive runs of files, each run's zip at most ``limit`` bytes."""
    parts: list[list[tuple[Path, str]]] = [[]]
    size = 22  # the zip's end record
    for path, name in files:
        need = path.stat().st_size + ZIP_OVERHEAD + 2 * len(name.encode())
        if need + 22 > limit:
            raise SystemExit(f"error: {path.name} ({need / 2**20:.1f} MiB) does not fit in a part; raise --part-mib")
        if size + need > limit and parts[-1]:
            parts.append([])
            size = 22
        parts[-1].append((path, name))
        size += need
    return parts


def write_part(path: Path, files: list[tuple[Path, str]]) -> int:
    """One zip of stored files, written to a temporary name and renamed; returns its size."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for source, name in files:
            archive.write(source, name)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files = plan(Path(args.data), args.photos, args.add, args.dest)
    except cub.CubDataError as error:
        raise SystemExit(f"error: {error}") from None
    limit = int(args.part_mib * 2**20)
    parts = split_parts(files, limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.zip"):
        old.unlink()
    record = []
    for k, chunk in enumerate(parts, start=1):
        size = write_part(out / f"part-{k}.zip", chunk)
        photos = sum(1 for _, name in chunk if name.lower().endswith(".jpg"))
        record.append({"part": f"part-{k}.zip", "bytes": size, "files": len(chunk), "photos": photos})
        print(f"part-{k}.zip: {size / 2**20:.1f} MiB, {len(chunk)} files ({photos} photos)", flush=True)
    (out / "pack.json").write_text(json.dumps({"photos": args.photos, "dest": args.dest, "parts": record}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
