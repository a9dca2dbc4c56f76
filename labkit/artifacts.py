"""Artifacts: every stage's output folder carries a small JSON manifest.

The manifest says what made the folder: the stage, its config, the seed, the library versions and
hashes of the inputs, so a chapter can start cold from a saved stage and know what it loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "atomic_write",
    "file_hash",
    "git_commit",
    "library_versions",
    "provenance",
    "read_manifest",
    "weights_hash",
    "write_json",
    "write_manifest",
]

_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "tokenizers", "alt-profanity-check")


def library_versions() -> dict[str, str]:
    """Versions of python and the libraries whose behaviour decides the numbers."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def provenance(script: str, argv: list[str] | None = None) -> dict[str, Any]:
    """What every benchmark result records about how it was made: the command that reproduces it, the
    date, the machine, torch's thread count and the library versions."""
    import sys

    import torch

    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": " ".join([f"python {script}", *args]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit of the labkit checkout (`folder`, default the repository this file is in), with "+changes"
    when tracked files differ from it; None outside a git checkout or without git."""
    import subprocess

    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+changes" if changed else commit


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (of every file, sorted by name, for a folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def weights_hash(module) -> str:
    """sha256 of a torch module's state: every tensor's name, dtype, shape and bytes, in name order.
    Two modules with the same hash compute the same function; the weights are read, not copied to disk."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def atomic_write(path: str | Path, data: str | bytes, mode: int | None = None) -> Path:
    """Write a whole file atomically: a temp file in the same folder, fsync, then rename over `path`.

    Readers see the old file or the new one, never half of either. The new file keeps the mode of
    the file it replaces (or `mode`, or the umask's default for a new file): `mkstemp` alone would
    leave 0600 whatever the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then swap it in for `final` in one rename.

        with atomic_folder(out) as tmp:
            model.save_pretrained(tmp)

    If the body raises, the temporary folder goes and `final` is untouched. The old `final` is
    moved aside (`<name>.old`) before the new one is renamed in and deleted afterwards, so a crash
    between the two renames leaves `<name>.old` complete (callers that resume look there too).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o777 & ~_umask())
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (see `atomic_write`): readers never see half a file."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n"
    return atomic_write(path, text)


def write_manifest(
    folder: str | Path,
    stage: str,
    config: Any = None,
    seed: int | None = None,
    inputs: dict[str, str] | None = None,
    **extra: Any,
) -> Path:
    """Write `folder/manifest.json` describing the stage that produced the folder."""
    return write_json(
        Path(folder) / "manifest.json",
        {
            "stage": stage,
            "config": config,
            "seed": seed,
            "inputs": inputs or {},
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        },
    )


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a stage folder; a clear error if the folder is not a stage artifact."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a labkit artifact (no manifest.json); rebuild it with "
            "the stage's function or `labkit run`"
        )
    return json.loads(path.read_text())
