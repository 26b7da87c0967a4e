"""Verifying an exported audit log away from the gateway: the records' hashes and links, and the checkpoints'
signatures with the gateway's public key alone."""

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.gateway.audit.chain import GENESIS_HASH, HASHED_FIELDS, OPTIONAL_HASHED_FIELDS, record_hash
from bastion.gateway.audit.checkpoints import signed_bytes
from bastion.gateway.audit.verify import ChainReport


class ExportUnreadable(ValueError):
    """A line of an exported file is not a record or a checkpoint of the expected shape."""


@dataclass
class _Record:
    """The hashed fields of one exported record, as `record_hash` reads them."""

    fields: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name == "timestamp":
            return datetime.fromisoformat(self.fields["timestamp"].removesuffix("Z"))
        return self.fields.get(name)


@dataclass
class _Checkpoint:
    seq: int
    hash: str
    count: int
    reason: str
    created_at: datetime
    key_id: str
    signature: str


def _lines(lines: Iterable[str], what: str) -> list[dict[str, Any]]:
    documents = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            documents.append(json.loads(line))
        except ValueError as exc:
            raise ExportUnreadable(f"{what} line {number} is not JSON: {exc}") from exc
    return documents


def verify_export(records: Iterable[str], checkpoints: Iterable[str], public_key: str) -> ChainReport:
    """Check a JSON Lines export (`bastion audit export --format jsonl`, unfiltered) against the signed checkpoints
    (`bastion audit checkpoints`): every checkpoint's signature, every record's hash, every link to the record
    before it, that each checkpoint names the record at its seq, and that the export reaches the last checkpoint."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ExportUnreadable("the public key is not the base64 of a raw 32-byte Ed25519 key "
                               "(`bastion audit public-key` prints it)") from exc
    marks = []
    for document in _lines(checkpoints, "checkpoints"):
        try:
            mark = _Checkpoint(int(document["seq"]), document["hash"], int(document["count"]), document["reason"],
                               datetime.fromisoformat(document["created_at"].removesuffix("Z")), document["key_id"],
                               document["signature"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportUnreadable(f"checkpoint {document!r:.80} lacks a field: {exc}") from exc
        try:
            key.verify(base64.b64decode(mark.signature), signed_bytes(mark))
        except (InvalidSignature, binascii.Error, ValueError):
            return _broken(0, mark.seq, "bad_checkpoint",
                           f"checkpoint at seq {mark.seq} is not validly signed by this public key")
        marks.append(mark)
    by_seq = {mark.seq: mark for mark in marks if mark.reason != "prune"}
    prune = max((mark for mark in marks if mark.reason == "prune"), key=lambda mark: mark.seq, default=None)
    previous_seq, previous_hash = (prune.seq, prune.hash) if prune else (0, GENESIS_HASH)
    walked = matched = 0
    for document in _lines(records, "records"):
        try:
            seq, stored = int(document["seq"]), document["hash"]
            fields = {name: document[name] for name in HASHED_FIELDS}
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportUnreadable(f"record {document!r:.80} lacks a field (export with --format jsonl): "
                                   f"{exc}") from exc
        fields.update({name: document[name] for name in OPTIONAL_HASHED_FIELDS if document.get(name) is not None})
        if seq <= previous_seq:
            return _broken(walked, seq, "reordered", f"record {seq} comes after record {previous_seq}")
        if seq != previous_seq + 1:
            return _broken(walked, previous_seq + 1, "deleted", f"records {previous_seq + 1}..{seq - 1} are "
                           "missing (a filtered export cannot be verified: export everything)")
        if fields["prev_hash"] != previous_hash:
            return _broken(walked, seq, "broken_link", f"record {seq} does not link to record {seq - 1}")
        if record_hash(_Record(fields)) != stored:
            return _broken(walked, seq, "modified", f"record {seq} was changed after it was written")
        mark = by_seq.get(seq)
        if mark is not None and mark.hash != stored:
            return _broken(walked, seq, "checkpoint_mismatch", f"the signed checkpoint at seq {seq} names another "
                           "record")
        matched += mark is not None
        previous_seq, previous_hash = seq, stored
        walked += 1
    last = max(by_seq, default=None)
    if last is not None and last > previous_seq:
        return _broken(walked, previous_seq + 1, "truncated", f"the export ends at seq {previous_seq}, but a signed "
                       f"checkpoint covers records through {last}")
    return ChainReport(True, walked, checkpoints=matched, last_checkpoint_seq=last,
                       pruned_through_seq=prune.seq if prune else None)


def _broken(walked: int, seq: int, kind: str, problem: str) -> ChainReport:
    return ChainReport(False, walked, first_bad_seq=seq, kind=kind, problem=problem)
