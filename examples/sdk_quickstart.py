"""The Python SDK in one screen: a session, a call, a streamed call, and a refusal handled.

    BASTION_API_KEY=bst_... python -m examples.sdk_quickstart --url http://127.0.0.1:8080
"""

import argparse
import os

from bastion_client import BastionClient, PolicyDenied


def main(url: str, api_key: str) -> list[str]:
    """Run the tour and return what it printed."""
    lines: list[str] = []
    with BastionClient(url, api_key) as client, client.create_session(labels={"example": "quickstart"}) as session:
        result = session.call("shell.run", command="echo hello from the sandbox; uname -s")
        lines.append(f"exit {result.exit_code}: {result.stdout.strip()}")
        stream = session.stream("python.run", code="import time\nfor i in range(3):\n    print(i, flush=True)")
        lines.extend(f"[{chunk.stream}] {chunk.data.strip()}" for chunk in stream)
        lines.append(f"streamed call {stream.call_id} took {stream.result.duration_ms:.0f} ms")
        try:
            session.call("fs.read", path="/etc/shadow")
        except PolicyDenied as denied:
            lines.append(f"denied ({denied.call_id}): {'; '.join(denied.reasons)}")
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("BASTION_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("BASTION_API_KEY", ""))
    arguments = parser.parse_args()
    main(arguments.url, arguments.key)
