"""Bundles read as OPA reads them: nested data files at their directory's path, and .tar.gz bundles."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from bastion.policy.bundle import PolicyBundle
from bastion.policy.bundle_files import read_bundle_source
from bastion.policy.errors import PolicyBundleError

POLICY = "package bastion.authz\n\nimport rego.v1\n\ndeny contains \"x\" if data.teams.payments.frozen\n"
TEST = "package bastion.authz_test\n\nimport rego.v1\n\ntest_nothing if true\n"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _tarball(path: Path, files: dict[str, str], prefix: str = "/") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return path


BUNDLE = {"policy.rego": POLICY, "policy_test.rego": TEST, "README.md": "ignored",
          "data.json": json.dumps({"bastion": {"config": {}}}),
          "teams/payments/data.json": json.dumps({"frozen": True}),
          "teams/ops/data.yaml": "oncall:\n  - ana\n  - bo\n",
          ".manifest": json.dumps({"revision": "r1", "roots": [""]})}
MERGED = {"bastion": {"config": {}}, "teams": {"payments": {"frozen": True}, "ops": {"oncall": ["ana", "bo"]}}}


def test_a_directorys_data_files_merge_at_their_paths(tmp_path: Path) -> None:
    files, data = read_bundle_source(_write(tmp_path, BUNDLE))
    assert sorted(files) == ["policy.rego", "policy_test.rego"]
    assert data == MERGED
    bundle = PolicyBundle.load(tmp_path)
    assert list(bundle.modules) == ["policy.rego"] and bundle.data == MERGED


def test_a_tar_gz_bundle_loads_like_its_directory(tmp_path: Path) -> None:
    directory = PolicyBundle.load(_write(tmp_path / "dir", BUNDLE))
    for prefix in ("/", "./", ""):
        archived = PolicyBundle.load(_tarball(tmp_path / f"bundle{len(prefix)}.tar.gz", BUNDLE, prefix))
        assert archived.modules == directory.modules and archived.data == MERGED
        assert archived.revision == directory.revision


@pytest.mark.parametrize(("files", "message"), [
    ({"data.json": json.dumps({"teams": {"payments": {"frozen": False}}}),
      "teams/payments/data.json": json.dumps({"frozen": True})},
     "data.teams.payments.frozen is set by both data.json and teams/payments/data.json"),
    ({"data.json": json.dumps({"teams": 3}), "teams/data.json": json.dumps({"a": 1})},
     "already sets data.teams to a non-object value"),
    ({"teams/data.json": "[1, 2]"}, "teams/data.json must hold an object, not list"),
    ({"teams/data.json": "{\"a\": "}, "teams/data.json:1:7: not valid JSON"),
    ({"teams/data.yaml": "a: [1,"}, "teams/data.yaml: not valid YAML"),
])
def test_bad_data_files_are_refused_naming_the_files(tmp_path: Path, files: dict[str, str], message: str) -> None:
    _write(tmp_path, {"policy.rego": POLICY, **files})
    with pytest.raises(PolicyBundleError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_bundle_source(tmp_path)


def test_a_tarball_with_links_or_escaping_paths_is_refused(tmp_path: Path) -> None:
    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(linked, "w:gz") as archive:
        info = tarfile.TarInfo("policy.rego")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(PolicyBundleError, match="link or special file"):
        read_bundle_source(linked)
    with pytest.raises(PolicyBundleError, match="not a relative path"):
        read_bundle_source(_tarball(tmp_path / "escape.tar.gz", {"../policy.rego": POLICY}, prefix=""))
    (tmp_path / "broken.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(PolicyBundleError, match=r"not a readable \.tar\.gz bundle"):
        read_bundle_source(tmp_path / "broken.tar.gz")
    with pytest.raises(PolicyBundleError, match="does not exist"):
        read_bundle_source(tmp_path / "missing")
    with pytest.raises(PolicyBundleError, match=r"neither a directory nor a \.tar\.gz"):
        read_bundle_source(_write(tmp_path, {"bundle.zip": "PK"}) / "bundle.zip")
