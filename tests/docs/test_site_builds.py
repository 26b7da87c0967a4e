"""The documentation site builds with no broken link or anchor, and its API reference covers the whole API."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strictly_and_documents_every_route(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    document = json.loads((site / "reference" / "openapi.json").read_text())
    reference = (site / "reference" / "http-api" / "index.html").read_text()
    routes = [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]
    assert len(routes) > 40
    missing = [route for route in routes if route.replace("{", "&#123;").replace("}", "&#125;") not in reference
               and route not in reference]
    assert not missing, missing
    python = (site / "reference" / "python" / "index.html").read_text()
    for name in ("BastionClient", "PolicyEngine", "SandboxRuntime", "DecisionInput", "Verdict", "GatewayError"):
        assert name in python, name


def test_every_relative_link_of_the_readme_resolves() -> None:
    readme = (ROOT / "README.md").read_text()
    links = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", readme)
             if not target.startswith(("http://", "https://", "#", "mailto:"))]
    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []
