"""What a framework hands back to the model for a finished call (a refusal is the error's text)."""

from bastion_client.models import CallResult


def answer_text(result: CallResult) -> str:
    """The call's stdout (or its data), stderr after it when there is any, and `[exit code N]` when it failed."""
    if result.data is not None and not result.stdout:
        return str(result.data)
    text = result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr else "")
    return text if result.ok else f"{text}\n[exit code {result.exit_code}]"

