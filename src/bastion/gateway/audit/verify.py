"""Walking the chain: the first modified, deleted, inserted or reordered record, and a truncated tail."""

from collections import deque
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Row, select

from bastion.gateway.audit.chain import GENESIS_HASH, record_hash, timestamp_text
from bastion.gateway.audit.checkpoints import CheckpointSigner
from bastion.gateway.audit.store import CHECKPOINTS, RECORDS
from bastion.gateway.db.tables import AuditCheckpoint

LOOKAHEAD = 1000
LOOKBEHIND = 1000


@dataclass(frozen=True)
class ChainReport:
    """Outcome of walking the chain: ok, or the first record that breaks it, how (`kind`), and why."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None
    kind: str | None = None
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None
    pruned_through_seq: int | None = None


class _Broken(Exception):
    def __init__(self, seq: int | None, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.seq, self.kind, self.problem = seq, kind, problem


@dataclass
class _Walk:
    prev: str
    total: int
    last_seq: int
    walked: int = 0
    matched: int = 0
    last_checkpoint_seq: int | None = None


def verify_chain(engine: Engine, signer: CheckpointSigner | None, batch_size: int = 5000) -> ChainReport:
    """Check every checkpoint's signature, then walk every record in order against its links and checkpoints."""
    with engine.connect() as connection:
        checkpoints = [AuditCheckpoint(**row._mapping) for row in connection.execute(
            select(CHECKPOINTS).order_by(CHECKPOINTS.c.seq, CHECKPOINTS.c.id))]
        anchor = max((cp for cp in checkpoints if cp.reason == "prune"), key=lambda cp: cp.seq, default=None)
        walk = _Walk(prev=anchor.hash if anchor else GENESIS_HASH, total=anchor.count if anchor else 0,
                     last_seq=anchor.seq if anchor else 0)
        try:
            _check_signatures(checkpoints, signer)
            _check_pruned_prefix(connection, anchor)
            _walk_records(connection, walk, deque(cp for cp in checkpoints if cp.seq > walk.last_seq), batch_size)
        except _Broken as broken:
            return ChainReport(False, walk.walked, broken.seq, broken.problem, broken.kind, walk.matched,
                               walk.last_checkpoint_seq, anchor.seq if anchor else None)
    return ChainReport(True, walk.walked, checkpoints=walk.matched, last_checkpoint_seq=walk.last_checkpoint_seq,
                       pruned_through_seq=anchor.seq if anchor else None)


def _check_signatures(checkpoints: list[AuditCheckpoint], signer: CheckpointSigner | None) -> None:
    if signer is None:
        return
    for cp in checkpoints:
        if not signer.verifies(cp):
            raise _Broken(cp.seq, "bad_checkpoint",
                          f"checkpoint {cp.id} at seq {cp.seq} is not validly signed by key {signer.key_id}: "
                          "it was forged or modified, or signed by another key")


def _check_pruned_prefix(connection: Connection, anchor: AuditCheckpoint | None) -> None:
    if anchor is None:
        return
    stray = connection.execute(select(RECORDS.c.seq).where(RECORDS.c.seq <= anchor.seq)
                               .order_by(RECORDS.c.seq).limit(1)).scalar()
    if stray is not None:
        raise _Broken(stray, "inserted", f"record {stray} lies in the prefix pruned through seq {anchor.seq}: "
                                         "it was inserted after the prune")


def _walk_records(connection: Connection, walk: _Walk, pending: deque[AuditCheckpoint], batch_size: int) -> None:
    recent: deque[tuple[int, str]] = deque(maxlen=LOOKBEHIND)
    while True:
        rows = connection.execute(select(RECORDS).where(RECORDS.c.seq > walk.last_seq)
                                  .order_by(RECORDS.c.seq).limit(batch_size)).all()
        if not rows:
            break
        for row in rows:
            while pending and pending[0].seq < row.seq:
                cp = pending.popleft()
                raise _Broken(cp.seq, "deleted", f"record {cp.seq}, covered by the signed checkpoint of "
                                                 f"{timestamp_text(cp.created_at)}, is missing from the chain")
            if row.prev_hash != walk.prev:
                raise _classify(connection, row, walk.prev, recent)
            if record_hash(row) != row.hash:
                raise _Broken(row.seq, "modified", f"record {row.seq} was modified: its content does not match "
                                                   "its hash")
            walk.walked += 1
            walk.total += 1
            walk.prev, walk.last_seq = row.hash, row.seq
            recent.append((row.seq, row.hash))
            while pending and pending[0].seq == row.seq:
                _match_checkpoint(pending.popleft(), row, walk)
    if pending:
        cp = pending[-1]
        raise _Broken(walk.last_seq + 1, "truncated",
                      f"the tail was truncated: the chain ends at seq {walk.last_seq} with {walk.total} records, but "
                      f"the signed checkpoint of {timestamp_text(cp.created_at)} covers {cp.count} records through "
                      f"seq {cp.seq}")


def _match_checkpoint(cp: AuditCheckpoint, row: Row, walk: _Walk) -> None:
    if cp.hash != row.hash or cp.count != walk.total:
        since = walk.last_checkpoint_seq or 0
        raise _Broken(cp.seq, "modified",
                      f"the chain was rewritten between seq {since + 1} and {cp.seq}: record {cp.seq} (chain length "
                      f"{walk.total}) does not match the signed checkpoint of {timestamp_text(cp.created_at)} "
                      f"(chain length {cp.count})")
    walk.matched += 1
    walk.last_checkpoint_seq = cp.seq


def _classify(connection: Connection, row: Row, prev: str, recent: deque[tuple[int, str]]) -> _Broken:
    """Name the break at `row`, whose link does not reach the last good record, by looking around it."""
    last_good = recent[-1][0] if recent else None
    earlier = [seq for seq, digest in list(recent)[:-1] if digest == row.prev_hash]
    if earlier:
        first_foreign = next(seq for seq, _ in recent if seq > earlier[-1])
        return _Broken(first_foreign, "inserted",
                       f"record {first_foreign} does not belong to the chain (inserted): record {row.seq} links "
                       f"to record {earlier[-1]}")
    ahead = connection.execute(select(RECORDS.c.seq, RECORDS.c.prev_hash, RECORDS.c.hash)
                               .where(RECORDS.c.seq > row.seq).order_by(RECORDS.c.seq).limit(LOOKAHEAD)).all()
    moved = [later.seq for later in ahead if later.hash == row.prev_hash]
    if moved:
        return _Broken(row.seq, "reordered", f"record {row.seq} is out of order: it links to record {moved[0]}, "
                                             "which comes after it")
    successor = next((later.seq for later in ahead if later.prev_hash == prev), None)
    if successor is not None:
        return _Broken(row.seq, "inserted", f"record {row.seq} does not belong to the chain (inserted): record "
                                            f"{successor} links to record {last_good or 'genesis'}")
    if last_good is None:
        return _Broken(row.seq, "deleted", f"records before seq {row.seq} were deleted: the first record links "
                                           "neither to genesis nor to a prune checkpoint")
    return _Broken(row.seq, "deleted", f"one or more records between seq {last_good} and {row.seq} were deleted: "
                                       f"record {row.seq} links to a record that is gone")
