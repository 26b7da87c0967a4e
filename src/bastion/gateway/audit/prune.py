"""Pruning the chain's old prefix, leaving a signed checkpoint that the rest of the chain still links to."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, select

from bastion.gateway.audit.chain import ChainTail
from bastion.gateway.audit.checkpoints import CheckpointSigner, write_checkpoint
from bastion.gateway.audit.store import CHECKPOINTS, RECORDS, lock_chain
from bastion.gateway.audit.verify import ChainReport, verify_chain
from bastion.gateway.db.tables import AuditCheckpoint


class PruneRefused(Exception):
    """The chain is broken, so pruning would destroy the evidence; nothing was deleted."""

    def __init__(self, report: ChainReport) -> None:
        super().__init__(f"the audit chain does not verify ({report.problem}); nothing was pruned")
        self.report = report


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed, and the checkpoint the remaining chain now starts from."""

    deleted: int
    checkpoint: AuditCheckpoint | None


def prune_before(engine: Engine, signer: CheckpointSigner, before: datetime) -> PruneReport:
    """Delete the records older than `before` (a prefix of the chain) after verifying it, under a prune checkpoint."""
    report = verify_chain(engine, signer)
    if not report.ok:
        raise PruneRefused(report)
    cutoff = before if before.tzinfo else before.replace(tzinfo=UTC)
    with engine.connect() as connection:
        lock_chain(connection)
        first_kept = connection.execute(select(func.min(RECORDS.c.seq))
                                        .where(RECORDS.c.timestamp >= cutoff.astimezone(UTC))).scalar()
        last_pruned = connection.execute(
            select(RECORDS.c.seq, RECORDS.c.hash)
            .where(RECORDS.c.seq < first_kept if first_kept is not None else RECORDS.c.seq.is_not(None))
            .order_by(RECORDS.c.seq.desc()).limit(1)
        ).first()
        if last_pruned is None:
            connection.rollback()
            return PruneReport(deleted=0, checkpoint=None)
        checkpoint = write_checkpoint(connection, signer, ChainTail(last_pruned.seq, last_pruned.hash), "prune")
        deleted = connection.execute(delete(RECORDS).where(RECORDS.c.seq <= last_pruned.seq)).rowcount
        connection.execute(delete(CHECKPOINTS).where(CHECKPOINTS.c.seq < last_pruned.seq))
        connection.commit()
    return PruneReport(deleted=deleted, checkpoint=checkpoint)
