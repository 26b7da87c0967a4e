"""The tamper-evident audit log: records are hash-chained, written before and after each call, group-committed,
signed at checkpoints, queried, exported, verified and pruned.

    log          AuditLog: append (group commit through `writer`), verify, checkpoint; AuditEntry, AuditStoreError
    chain        what a record's hash covers and how entries link after the tail
    store        the tables, the chain lock, reading the tail, fast inserts
    writer       group commit: concurrent appends become few transactions, in order
    checkpoints  Ed25519-signed checkpoints of the chain
    query        filtered, cursor-paginated reads, call statuses, counts per time bucket
    export       JSON Lines, CSV and OPA decision-log exports in constant memory
    verify       walking the chain to the first broken record
    prune        dropping an old prefix behind a signed checkpoint
    redaction    masking configured and policy-named fields before they are stored"""

from bastion.gateway.audit.checkpoints import CheckpointSigner
from bastion.gateway.audit.export import MEDIA_TYPES, ExportFormat, export_chunks, record_document
from bastion.gateway.audit.log import AuditEntry, AuditLog, AuditStoreError
from bastion.gateway.audit.prune import PruneRefused, PruneReport, prune_before
from bastion.gateway.audit.query import (
    AuditFilter,
    BadCursor,
    Status,
    audit_stats,
    decision_args,
    iter_audit,
    query_audit,
)
from bastion.gateway.audit.redaction import AuditRedactor
from bastion.gateway.audit.verify import ChainReport, verify_chain

__all__ = [
    "MEDIA_TYPES",
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "AuditRedactor",
    "AuditStoreError",
    "BadCursor",
    "ChainReport",
    "CheckpointSigner",
    "ExportFormat",
    "PruneRefused",
    "PruneReport",
    "Status",
    "audit_stats",
    "decision_args",
    "export_chunks",
    "iter_audit",
    "prune_before",
    "query_audit",
    "record_document",
    "verify_chain",
]
