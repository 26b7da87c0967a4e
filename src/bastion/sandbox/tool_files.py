"""A tool's files, installed where sandboxed code cannot write: `<socket dir>/tools/<digest>/` on the host, which
the container sees read-only as `/run/bastion/tools/<digest>/`. The executor checks each file's digest right
before it execs the tool."""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

CONTAINER_DIR = "/run/bastion/tools"


def bundle_digest(files: Mapping[str, str]) -> str:
    """One name for one set of files and contents."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32]


def install(socket_dir: Path, files: Mapping[str, str]) -> str:
    """Write `files` (relative paths) once under the socket dir, read-only to everyone; return the directory the
    container sees them in."""
    digest = bundle_digest(files)
    parent = socket_dir / "tools"
    target = parent / digest
    if not target.is_dir():
        parent.mkdir(mode=0o755, exist_ok=True)
        staging = parent / f".{digest}.{uuid.uuid4().hex}"
        for path, content in files.items():
            file = staging / os.path.normpath(path)
            file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            file.write_bytes(content.encode())
            file.chmod(0o444)
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return f"{CONTAINER_DIR}/{digest}"


def rewritten(argv: list[str], files: Mapping[str, str], directory: str) -> list[str]:
    """`argv` with every element that names one of `files` replaced by that file's read-only path."""
    names = {os.path.normpath(path) for path in files}
    return [f"{directory}/{os.path.normpath(arg)}" if os.path.normpath(arg) in names else arg for arg in argv]


def digests(files: Mapping[str, str], directory: str) -> dict[str, str]:
    """The SHA-256 of each file, by its path in the container."""
    return {f"{directory}/{os.path.normpath(path)}": hashlib.sha256(content.encode()).hexdigest()
            for path, content in files.items()}
