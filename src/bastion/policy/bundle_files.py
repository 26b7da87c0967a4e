"""Reading an OPA bundle as OPA loads it: from a directory or a `.tar.gz`, Rego files by path, and every
`data.json` / `data.yaml` merged into the data document at the path of its directory."""

import json
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from bastion.policy.errors import PolicyBundleError

DATA_FILES = ("data.json", "data.yaml", "data.yml")
MAX_MEMBER_BYTES = 4_000_000
MAX_MEMBERS = 1000


def is_data_file(name: str) -> bool:
    """True for a bundle file holding data (`data.json`, `data.yaml` or `data.yml` in any directory)."""
    return PurePosixPath(name).name in DATA_FILES


def read_bundle_source(source: Path | str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The `.rego` files (tests included) and the merged data document (None: no data file) of a bundle
    directory or `.tar.gz` bundle; PolicyBundleError says what is wrong."""
    path = Path(source)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        entries = dict(_tar_entries(path))
    elif path.is_dir():
        entries = {file.relative_to(path).as_posix(): file.read_text(encoding="utf-8")
                   for file in sorted(path.rglob("*")) if file.is_file() and _wanted(file.name)}
    elif not path.exists():
        raise PolicyBundleError(f"policy bundle {path} does not exist")
    else:
        raise PolicyBundleError(f"policy bundle {path} is neither a directory nor a .tar.gz file")
    files = {name: text for name, text in entries.items() if name.endswith(".rego")}
    data_files = {name: text for name, text in entries.items() if is_data_file(name)}
    return files, merge_data_files(data_files) if data_files else None


def merge_data_files(data_files: Mapping[str, str], base: Mapping[str, Any] | None = None,
                     base_name: str = "the data field") -> dict[str, Any]:
    """Parse each data file and merge it into one document at the path of its directory (`a/b/data.json`
    becomes `data.a.b`), on top of `base`; two files setting the same value are refused, as OPA refuses them."""
    document: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    if base:
        _merge(document, (), dict(base), base_name, owners)
    for name in sorted(data_files, key=lambda n: (n.count("/"), n)):
        parsed = parse_data_file(name, data_files[name])
        _merge(document, PurePosixPath(name).parent.parts, parsed, name, owners)
    return document


def parse_data_file(name: str, text: str) -> dict[str, Any]:
    """One data file's object; PolicyBundleError with the file and position when it is not one."""
    try:
        parsed = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PolicyBundleError(f"{name}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        raise PolicyBundleError(f"{name}: not valid YAML: {exc}") from exc
    if parsed is None and not name.endswith(".json"):
        return {}
    if not isinstance(parsed, dict):
        raise PolicyBundleError(f"{name} must hold an object, not {type(parsed).__name__}")
    return parsed


def _merge(into: dict[str, Any], at: tuple[str, ...], value: dict[str, Any], name: str,
           owners: dict[tuple[str, ...], str]) -> None:
    """Put `value`'s keys under `into` at path `at`, object by object."""
    target = into
    for depth, key in enumerate(at):
        existing = target.setdefault(key, {})
        if not isinstance(existing, dict):
            raise PolicyBundleError(f"{name} is stored at data.{'.'.join(at)}, but "
                                    f"{_owner(owners, at[:depth + 1])} already sets "
                                    f"data.{'.'.join(at[:depth + 1])} to a non-object value")
        target = existing
    for key, item in value.items():
        path = (*at, key)
        if isinstance(item, dict) and isinstance(target.get(key), dict):
            _merge(into, path, item, name, owners)
        elif key in target:
            raise PolicyBundleError(f"data.{'.'.join(path)} is set by both {_owner(owners, path)} "
                                    f"and {name}; a bundle's data files must not overlap")
        else:
            target[key] = item
            owners[path] = name


def _owner(owners: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    """The file that set `path` or the object holding it."""
    for end in range(len(path), 0, -1):
        if path[:end] in owners:
            return owners[path[:end]]
    return "another file"


def _wanted(file_name: str) -> bool:
    return file_name.endswith(".rego") or file_name in DATA_FILES


def _tar_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(name inside the bundle, text) of the Rego and data files of a gzipped tar bundle, checked."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
            if len(members) > MAX_MEMBERS:
                raise PolicyBundleError(f"{path} has {len(members)} entries; at most {MAX_MEMBERS} are read")
            for member in members:
                name = member.name.lstrip("/").removeprefix("./")
                if member.isdir() or not _wanted(PurePosixPath(name).name):
                    continue
                if not member.isfile():
                    raise PolicyBundleError(f"{path}: {member.name} is a link or special file; bundles hold "
                                            "regular files only")
                if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                    raise PolicyBundleError(f"{path}: {member.name} is not a relative path inside the bundle")
                if member.size > MAX_MEMBER_BYTES:
                    raise PolicyBundleError(f"{path}: {member.name} is {member.size} bytes; at most "
                                            f"{MAX_MEMBER_BYTES} are read")
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                try:
                    yield name, handle.read().decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PolicyBundleError(f"{path}: {member.name} is not UTF-8 text") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PolicyBundleError(f"{path} is not a readable .tar.gz bundle: {exc}") from exc
