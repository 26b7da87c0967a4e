"""A bounded LRU of decisions keyed by (policy and data revision, exact input), so nothing is served stale."""

import threading
from collections import OrderedDict

from bastion.policy.types import Decision


class DecisionCache:
    """Thread-safe LRU; a revision change (new policy, new revocations) makes every old entry unreachable."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, revision: str, input_json: str, count_miss: bool = True) -> Decision | None:
        """The cached decision for this revision and input, or None (a look before deciding passes
        `count_miss=False`: the decision that follows counts the miss)."""
        if self._size <= 0:
            return None
        with self._lock:
            decision = self._entries.get((revision, input_json))
            if decision is None:
                self.misses += count_miss
                return None
            self._entries.move_to_end((revision, input_json))
            self.hits += 1
            return decision

    def put(self, revision: str, input_json: str, decision: Decision) -> None:
        """Remember a decision, evicting the least recently used entry when full."""
        if self._size <= 0:
            return
        with self._lock:
            self._entries[(revision, input_json)] = decision
            self._entries.move_to_end((revision, input_json))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
