"""Labelled sessions on disk: JSON lines of {persona, attack, malicious[], events[], blocked[], scenario,
template}."""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from bastion.detector.synthetic.session import SyntheticSession
from bastion.detector.types import Event


def write_traces(sessions: Iterable[SyntheticSession], path: Path) -> int:
    """Write labelled sessions as JSON lines ({persona, attack, malicious[], events[]}); returns how many."""
    written = 0
    with path.open("w") as out:
        for session in sessions:
            record = {
                "persona": session.persona,
                "attack": session.attack,
                "malicious": session.malicious,
                "events": [event.model_dump(mode="json") for event in session.events],
                "blocked": session.blocked,
                "scenario": session.scenario,
                "template": session.template,
            }
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            written += 1
    return written


def read_traces(path: Path) -> Iterator[SyntheticSession]:
    """Labelled sessions from a JSON-lines trace file written by `write_traces` (or by hand, same shape)."""
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                events = [Event.model_validate(event) for event in record["events"]]
                malicious = [bool(flag) for flag in record.get("malicious", [False] * len(events))]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a trace record ({exc})") from exc
            blocked = record.get("blocked") or [None] * len(events)
            if len(malicious) != len(events) or len(blocked) != len(events):
                raise ValueError(f"{path}:{number}: 'malicious' and 'blocked' need one entry per event "
                                 f"({len(events)} events)")
            yield SyntheticSession(record.get("persona", "unknown"), record.get("attack"), events, malicious,
                                   [str(reason) if reason else None for reason in blocked],
                                   record.get("scenario", "standard"), record.get("template"))
