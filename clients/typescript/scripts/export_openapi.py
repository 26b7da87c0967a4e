"""Print the gateway's OpenAPI document, from which the TypeScript client's types are generated."""

import json
import sys

from bastion.gateway.api.app import create_app
from bastion.gateway.settings import Settings


def openapi_json() -> str:
    """The document as committed in clients/typescript/openapi.json (keys sorted, two-space indent)."""
    return json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_json())
