"""Database engine creation and schema migrations (Alembic is the only way the schema is made)."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, inspect
from sqlmodel import create_engine

from bastion.gateway.db.sqlite_turns import TurnTakingConnection

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def make_engine(url: str) -> Engine:
    """Create a SQLAlchemy engine; SQLite gets WAL, full fsync, a busy timeout and writers that take turns."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30,
                                                  "factory": TurnTakingConnection})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class DatabaseMissing(Exception):
    """The database a command should read is not there, or has no bastion schema."""


def open_existing(url: str) -> Engine:
    """An engine of a database that already holds bastion's schema; DatabaseMissing (nothing created) otherwise."""
    shown = url.split("@")[-1]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:" or not Path(path).is_file():
            raise DatabaseMissing(f"no bastion database at {shown}: point BASTION_DATA_DIR (or BASTION_DATABASE_URL) "
                                  "at the gateway's, or start a gateway there first (make run)")
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    except Exception as exc:
        engine.dispose()
        raise DatabaseMissing(f"the database at {shown} does not answer: {exc}") from exc
    if "alembic_version" not in tables:
        engine.dispose()
        raise DatabaseMissing(f"the database at {shown} has no bastion schema: run `bastion migrate` for a new one, "
                              "or point BASTION_DATABASE_URL at the gateway's")
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the shipped migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest schema."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
