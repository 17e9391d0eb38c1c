"""Where the package's data (config/) lives: a source checkout, a colcon install or a pip prefix."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

ENV_CONFIG_DIR = "ROS_FER_CONFIG_DIR"


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (a brief os.umask elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move a finished temporary file into place (atomically), readable as any new file would be under the
    umask: safetensors writes 0600, which would keep a node running as another user from a model."""
    os.chmod(tmp, 0o666 & ~umask())
    os.replace(tmp, path)


def write_whole(path: Path, text: str) -> None:
    """Writes `text` to `path` by replacing the file whole: a reader (or a second process writing at the same
    time) never sees half of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def remembered(path: Path, memo: Path, field: str, compute: Callable[[], object], valid: Callable = bool):
    """`compute()` of the file at `path` (its digest, what its header says), remembered in `memo` (JSON)
    under the file's resolved path with its size and modification time, so a later start reads a line
    instead of a file of hundreds of MB; a file that changed in either is computed again. An unreadable or
    foreign memo, or an entry `valid` refuses, is only a miss; a read-only memo, computing again next time.
    Writing drops the entries of files that are gone, and replaces the memo whole (two starts at once never
    leave half a file)."""
    stat, key = path.stat(), str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and valid(entry.get(field)):
        return entry[field]
    value = compute()
    known = {k: v for k, v in known.items() if k != key and os.path.exists(k)}
    known[key] = {**stamp, field: value}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_whole(memo, json.dumps(known, indent=1))
    except OSError:
        pass
    return value


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A file's SHA-256, read in blocks: a graph of hundreds of MB is never held whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path, memo: Path) -> str:
    """The first 16 hex digits of a file's SHA-256, remembered in `memo` (`remembered`), so a later start does
    not read and hash a file of hundreds of MB again (~0.5 s for ViT-B-32's graph)."""
    return remembered(path, memo, "sha256", lambda: file_sha256(path), lambda v: isinstance(v, str))[:16]


def cache_dir() -> Path:
    """Where ros_fer caches what it computes or fetches once (text banks, ONNX graphs, engines, YOLO weights)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ros_fer"


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """The folder that holds labels.yaml, prompts/, models/ and backbones/."""
    candidates: list[Path] = []
    if os.environ.get(ENV_CONFIG_DIR):
        candidates.append(Path(os.environ[ENV_CONFIG_DIR]))
    candidates.append(Path(__file__).resolve().parent.parent / "config")  # source checkout / editable
    try:  # a colcon install: the ament index knows the share folder
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("ros_fer")) / "config")
    except Exception:  # noqa: BLE001 - ament index absent or package not registered
        pass
    candidates.append(Path(sys.prefix) / "share" / "ros_fer" / "config")  # pip data_files
    for path in candidates:
        if (path / "labels.yaml").is_file():
            return path
    raise ConfigError(
        "cannot find ros_fer's config folder (labels.yaml); looked in "
        + ", ".join(str(p) for p in candidates)
        + f". Set {ENV_CONFIG_DIR} to the repository's config/ folder."
    )


def resolve(kind: str, name_or_path: str | os.PathLike[str], suffixes: tuple[str, ...] = (".yaml",)) -> Path:
    """A file given by path, or by name under config/<kind>/ (e.g. resolve('prompts', 'mlper'))."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    folder = config_dir() / kind
    for suffix in ("", *suffixes):
        candidate = folder / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in folder.glob("*") if p.suffix in suffixes) if folder.is_dir() else []
    raise ConfigError(f"no {kind} file or name {str(name_or_path)!r}; known names: {', '.join(known) or 'none'}")
