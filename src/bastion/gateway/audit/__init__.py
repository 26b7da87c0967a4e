"""The tamper-evident audit log: writer, chain, checkpoints, store, query, export, verify, prune, redaction."""
