"""MkDocs hook: the HTTP API reference page, generated at build time from the gateway's own OpenAPI document."""

import json
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "reference/http-api.md"
METHODS = ("get", "post", "put", "patch", "delete")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated page (and the OpenAPI document beside it) to the site."""
    document = openapi_document()
    files.append(File.generated(config, PAGE, content=render(document)))
    files.append(File.generated(config, "reference/openapi.json", content=json.dumps(document, indent=2)))
    return files


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app built with default settings (nothing is started)."""
    from bastion.gateway.api.app import create_app
    from bastion.gateway.settings import Settings

    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=Path(data_dir))).openapi()


def render(document: dict[str, Any]) -> str:
    """The reference as Markdown: operations grouped by tag, then every schema with its fields."""
    lines = ["# HTTP API", "", document["info"].get("description", ""), "",
             "The machine-readable document is [openapi.json](openapi.json); a running gateway also serves it at "
             "`/openapi.json` and an interactive view at `/docs`.", ""]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append((method, path, operation))
    for tag, operations in by_tag.items():
        lines += [f"## {tag}", ""]
        for method, path, operation in operations:
            lines += _operation(method, path, operation)
    lines += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines) + "\n"


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", operation.get("summary", ""), ""]
    description = operation.get("description")
    if description:
        lines += [description, ""]
    if operation.get("security"):
        lines += ["Authenticated: `Authorization: Bearer <key>`.", ""]
    parameters = operation.get("parameters") or []
    if parameters:
        lines += ["| parameter | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
        for parameter in parameters:
            lines.append(f"| `{parameter['name']}` | {parameter['in']} | {_type(parameter.get('schema', {}))} | "
                         f"{'yes' if parameter.get('required') else 'no'} | {_cell(parameter.get('description'))} |")
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Request body ({media}): {_type(content.get('schema', {}))}", ""]
    responses = operation.get("responses", {})
    if responses:
        lines += ["| status | answer |", "| --- | --- |"]
        for status, response in responses.items():
            schemas = [_type(content.get("schema", {})) for content in (response.get("content") or {}).values()]
            shown = f" — {', '.join(s for s in schemas if s)}" if any(schemas) else ""
            lines.append(f"| {status} | {_cell(response.get('description'))}{shown} |")
        lines.append("")
    return lines


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "", _cell(schema.get("description")) or "", ""]
    properties = schema.get("properties") or {}
    if properties:
        required = set(schema.get("required") or [])
        lines += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for field, spec in properties.items():
            lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} | "
                         f"{_cell(spec.get('description'))} |")
        lines.append("")
    elif "enum" in schema:
        lines += ["One of " + ", ".join(f"`{value}`" for value in schema["enum"]) + ".", ""]
    return lines


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: a link to a named schema, or its type."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for combiner in ("anyOf", "oneOf", "allOf"):
        if combiner in schema:
            return " or ".join(_type(part) for part in schema[combiner])
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    return f"`{kind}`" if kind else ""


def _cell(text: str | None) -> str:
    """Text fit for one table cell."""
    return " ".join((text or "").split()).replace("|", "\\|")
