"""The tamper-evident audit log: hash-chained records, written before and after each call, group-committed."""

import asyncio
from collections.abc import Iterable
from datetime import datetime

import structlog
from sqlalchemy import Engine

from bastion.gateway.audit.chain import AuditEntry, AuditStoreError, ChainedRecord, canonical_content, record_hash
from bastion.gateway.audit.checkpoints import (
    CheckpointPolicy,
    CheckpointSigner,
    last_checkpoint,
    signer_for,
    write_checkpoint,
)
from bastion.gateway.audit.prune import PruneReport, prune_before
from bastion.gateway.audit.store import lock_chain, read_tail
from bastion.gateway.audit.verify import ChainReport, verify_chain
from bastion.gateway.audit.writer import GroupCommitWriter, WriterConfig, WriterStats
from bastion.gateway.db.tables import AuditCheckpoint
from bastion.gateway.settings import Settings

__all__ = [
    "AuditEntry", "AuditLog", "AuditStoreError", "ChainReport", "ChainedRecord", "PruneReport", "WriterConfig",
    "canonical_content", "record_hash",
]

log = structlog.get_logger()


class AuditLog:
    """Appends records to the chain through one group-commit writer; verifies, checkpoints and prunes it."""

    def __init__(self, engine: Engine, signer: CheckpointSigner | None = None,
                 config: WriterConfig | None = None) -> None:
        self._engine = engine
        self.signer = signer
        self.config = config or WriterConfig()
        self._writer = GroupCommitWriter(engine, signer, self.config)
        self._unsettled: set[asyncio.Future[list[ChainedRecord]]] = set()

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> "AuditLog":
        """The audit log a gateway (or the CLI) uses: its signing key, queue and checkpoint cadence."""
        config = WriterConfig(
            queue_size=settings.audit_queue_size, max_batch=settings.audit_batch_max,
            commit_timeout_s=settings.audit_commit_timeout_s,
            checkpoints=CheckpointPolicy(every=settings.audit_checkpoint_every,
                                         interval_s=settings.audit_checkpoint_interval_s))
        return cls(engine, signer_for(settings), config)

    @property
    def engine(self) -> Engine:
        """The database the chain lives in."""
        return self._engine

    @property
    def stats(self) -> WriterStats:
        """Transactions, records and checkpoints the writer has committed."""
        return self._writer.stats

    @property
    def queued(self) -> int:
        """Appends waiting for the writer."""
        return self._writer.queued

    @property
    def in_progress(self) -> int:
        """Appends in the transaction being committed now."""
        return self._writer.in_progress

    def start(self) -> None:
        """Start the writer thread (appends also start it)."""
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued, sign a final checkpoint and stop the writer."""
        self._writer.close()

    def append(self, entries: Iterable[AuditEntry]) -> list[ChainedRecord]:
        """Durably commit the entries, chained in order; wait while the queue is full; raise AuditStoreError."""
        return self._writer.append(list(entries))

    async def append_async(self, entries: Iterable[AuditEntry], lone: bool = False) -> list[ChainedRecord]:
        """`append` for the event loop: waits without holding a thread unless the queue is full. `lone`: no other
        call is in flight, so an idle SQLite log may commit right away on the loop (see the writer)."""
        return await self._writer.append_async(list(entries), lone)

    async def append_queued(self, entries: Iterable[AuditEntry]) -> None:
        """Queue the entries without waiting for their commit (only for queue space): for records of what ran
        nothing (denials), whose answer need not wait for the disk. They are committed in order like any other;
        `settled` waits for them, and a failure to commit them is logged."""
        committed = await self._writer.submit_async(list(entries))
        self._unsettled.add(committed)
        committed.add_done_callback(self._settle)

    async def settled(self) -> None:
        """Wait until every append queued without waiting (`append_queued`) so far is committed or has failed."""
        while self._unsettled:
            await asyncio.wait(list(self._unsettled))

    def _settle(self, committed: asyncio.Future[list[ChainedRecord]]) -> None:
        self._unsettled.discard(committed)
        if not committed.cancelled() and committed.exception() is not None:
            log.error("audit store failed to commit a queued record", error=str(committed.exception()))

    def verify(self, batch_size: int = 5000) -> ChainReport:
        """Walk the whole chain; report the first modified, deleted, inserted or reordered record, or truncation."""
        return verify_chain(self._engine, self.signer, batch_size)

    def checkpoint(self, reason: str = "manual") -> AuditCheckpoint | None:
        """Sign a checkpoint at the current tail now (None when the tail is already covered)."""
        if self.signer is None:
            raise AuditStoreError("checkpoints need a signing key (BASTION_AUDIT_SIGNING_KEY)")
        with self._engine.connect() as connection:
            lock_chain(connection)
            tail = read_tail(connection)
            covered = last_checkpoint(connection)
            if tail.seq == 0 or (covered is not None and covered.seq >= tail.seq):
                return None
            written = write_checkpoint(connection, self.signer, tail, reason)
            connection.commit()
            return written

    def prune(self, before: datetime) -> PruneReport:
        """Delete records older than `before` after verifying the chain, leaving a signed prune checkpoint."""
        if self.signer is None:
            raise AuditStoreError("pruning needs a signing key (BASTION_AUDIT_SIGNING_KEY)")
        return prune_before(self._engine, self.signer, before)
