"""Operator accounts: create, list and disable them; authenticate an operator key or a name and password."""

import re
import secrets

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bastion.gateway.agents.principals import PrincipalView
from bastion.gateway.db.tables import ConsoleSession, Operator
from bastion.gateway.errors import GatewayError
from bastion.gateway.keys import hash_key, new_id
from bastion.gateway.operators.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from bastion.gateway.operators.roles import ROLES

OPERATOR_KEY_PREFIX = "bop_"
OPERATOR_ID_PREFIX = "operator:"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,47}$")


def new_operator_key() -> str:
    """A fresh random operator key (256 bits), told apart from agents' keys by its prefix."""
    return OPERATOR_KEY_PREFIX + secrets.token_urlsafe(32)


def operator_view(row: Operator) -> PrincipalView:
    """The operator as the admin routes see them: `operator:<name>` is the actor their audit records name."""
    return PrincipalView(id=OPERATOR_ID_PREFIX + row.name, kind="operator", name=row.name, roles=(row.role,),
                         disabled=row.disabled)


class OperatorStore:
    """Reads and writes operator rows; a disabled operator's credentials and console sessions stop working."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, role: str, password: str | None, with_key: bool,
               by: str) -> tuple[Operator, str | None]:
        """Create an operator with a password, a key, or both; return the row and the key (shown only now)."""
        _check(name, role, password, with_key)
        key = new_operator_key() if with_key else None
        row = Operator(id=new_id("opr"), name=name, role=role,
                       password_hash=hash_password(password) if password else None,
                       key_hash=hash_key(key) if key else None, key_prefix=key[:8] if key else None, created_by=by)
        try:
            with Session(self._engine, expire_on_commit=False) as db:
                db.add(row)
                db.commit()
        except IntegrityError as exc:
            raise GatewayError("operator-exists", "Operator exists",
                               f"An operator named {name!r} already exists (names are never reused, even once "
                               "disabled). Choose another name.") from exc
        return row, key

    def list(self) -> list[Operator]:
        """Every operator, oldest first."""
        with Session(self._engine) as db:
            return list(db.exec(select(Operator).order_by(Operator.created_at)))  # type: ignore[arg-type]

    def get(self, name: str) -> Operator | None:
        """One operator by name, or None."""
        with Session(self._engine) as db:
            return db.exec(select(Operator).where(Operator.name == name)).first()

    def disable(self, name: str) -> Operator:
        """Disable an operator: their key and password stop working and their console sessions end at once."""
        with Session(self._engine, expire_on_commit=False) as db:
            row = db.exec(select(Operator).where(Operator.name == name)).first()
            if row is None:
                raise GatewayError("unknown-operator", "Unknown operator",
                                   f"No operator {name!r}. GET /v1/operators lists them.")
            row.disabled = True
            db.add(row)
            for session in db.exec(select(ConsoleSession).where(
                    ConsoleSession.principal_id == OPERATOR_ID_PREFIX + name)):
                db.delete(session)
            db.commit()
            return row

    def by_key(self, key: str) -> PrincipalView | None:
        """The operator holding `key`, or None."""
        with Session(self._engine) as db:
            row = db.exec(select(Operator).where(Operator.key_hash == hash_key(key))).first()
        return operator_view(row) if row is not None else None

    def by_password(self, name: str, password: str) -> PrincipalView | None:
        """The enabled operator `name` if `password` is theirs, else None."""
        row = self.get(name)
        if row is None or row.disabled or row.password_hash is None:
            verify_password(password, _DUMMY_HASH)  # the same work whether or not the name exists
            return None
        return operator_view(row) if verify_password(password, row.password_hash) else None

    def by_principal_id(self, principal_id: str) -> PrincipalView | None:
        """The operator an `operator:<name>` principal id names, or None."""
        if not principal_id.startswith(OPERATOR_ID_PREFIX):
            return None
        row = self.get(principal_id.removeprefix(OPERATOR_ID_PREFIX))
        return operator_view(row) if row is not None else None


def _check(name: str, role: str, password: str | None, with_key: bool) -> None:
    if not NAME_PATTERN.match(name):
        raise GatewayError("bad-operator", "Bad operator name",
                           f"{name!r} is not a valid operator name: use 2-48 lowercase letters, digits, '.', '_' "
                           "or '-', starting with a letter.")
    if role not in ROLES:
        raise GatewayError("bad-operator", "Unknown role", f"{role!r} is not a role; use one of {', '.join(ROLES)}.")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise GatewayError("bad-operator", "Password too short",
                           f"An operator's password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if password is None and not with_key:
        raise GatewayError("bad-operator", "No credential",
                           "Give the operator a password, a key (with_key), or both.")


_DUMMY_HASH = hash_password("not-a-real-password")
