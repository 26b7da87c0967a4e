"""The database: engine, tables and the SQLite writers' turn-taking."""
