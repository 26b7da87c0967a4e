"""Redaction of sensitive argument fields before they reach the audit log."""

from bastion.gateway.audit.redactor import Redactor


def test_sensitive_fields_are_replaced_at_any_depth_and_still_correlate() -> None:
    redactor = Redactor(["password", "token"], key=b"k" * 32)
    doc = {"args": {"api_token": "s3cr3t-value", "nested": [{"Password": "pw-1"}], "count": 3, "path": "a.txt"}}
    redacted = redactor.redact(doc)
    assert "s3cr3t-value" not in repr(redacted) and "pw-1" not in repr(redacted)
    assert redacted["args"]["count"] == 3 and redacted["args"]["path"] == "a.txt"
    assert redacted["args"]["api_token"].startswith("[redacted:")
    assert redactor.redact(doc) == redacted
    assert Redactor(["token"], key=b"other").redact(doc)["args"]["api_token"] != redacted["args"]["api_token"]
    assert doc["args"]["api_token"] == "s3cr3t-value"
