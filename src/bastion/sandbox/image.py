"""Builds the sandbox base image locally with mmdebstrap and tags it by a digest of its recipe.

Run `python -m bastion.sandbox.image` to build it (about 30 s, once per machine) and print its tag.
"""

import fcntl
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

from bastion.sandbox.types import SandboxError

REPOSITORY = "bastion-sandbox"
RECIPE_VERSION = 1
SUITE = "bookworm"
SOURCE_SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
VARIANT = "essential"
PACKAGES = ("python3",)
PATH_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
CUSTOMIZE_HOOKS = ('find "$1" -xdev -type f -perm /6000 -exec chmod ug-s {} +',)
APT_SOURCES = Path("/etc/apt")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT_S = 900
LOCK_PATH = Path(tempfile.gettempdir()) / "bastion-sandbox-image.lock"


def image_tag() -> str:
    """`bastion-sandbox:<12 hex>`: the digest of the recipe, so a changed recipe means a new image."""
    recipe = {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "source_suites": SOURCE_SUITES,
        "variant": VARIANT,
        "packages": PACKAGES,
        "path_excludes": PATH_EXCLUDES,
        "customize_hooks": CUSTOMIZE_HOOKS,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{REPOSITORY}:{digest}"


def _source_entries(apt_dir: Path) -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every `deb` source configured on this machine."""
    entries: list[tuple[str, str, list[str]]] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                words = [word for word in words if not word.startswith("[")]
                entries.append((words[1], words[2], words[3:]))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ")):
                    fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("components", "").split()))
    return entries


def mirror_lines(apt_dir: Path = APT_SOURCES) -> list[str]:
    """The machine's configured Debian mirrors for the recipe's suites, as mmdebstrap `deb` lines."""
    lines = [
        f"deb {uri} {suite} main"
        for uri, suite, components in _source_entries(apt_dir)
        if suite in SOURCE_SUITES and "main" in components
    ]
    return list(dict.fromkeys(lines)) or [f"deb {FALLBACK_MIRROR} {SUITE} main"]


def build_rootfs(tarball: Path) -> None:
    """Run mmdebstrap to write the root filesystem tarball."""
    command = [
        "mmdebstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        *[f"--dpkgopt=path-exclude={pattern}" for pattern in PATH_EXCLUDES],
        *[f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS],
        SUITE,
        str(tarball),
        *mirror_lines(),
    ]
    try:
        subprocess.run(
            command, check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise SandboxError("mmdebstrap is not installed: install it to build the sandbox image") from exc
    except subprocess.CalledProcessError as exc:
        raise SandboxError(f"mmdebstrap failed building the sandbox image: {exc.stderr[-2000:]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"mmdebstrap did not finish within {BUILD_TIMEOUT_S}s") from exc


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient) -> str:
    """Return the base image's tag, building and importing it first if this engine lacks it."""
    tag = image_tag()
    if image_exists(client, tag):
        return tag
    with LOCK_PATH.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(client, tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="bastion-image-") as workdir:
            tarball = Path(workdir) / "rootfs.tar"
            build_rootfs(tarball)
            repository, _, digest = tag.partition(":")
            client.api.import_image_from_file(str(tarball), repository=repository, tag=digest)
    if not image_exists(client, tag):
        raise SandboxError(f"importing the sandbox image {tag} into Docker failed")
    return tag


def main() -> None:
    print(ensure_base_image(docker.from_env()))


if __name__ == "__main__":
    main()
