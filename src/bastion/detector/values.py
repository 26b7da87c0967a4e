"""The values a call's arguments carry and a tool's output mentions: e-mail addresses, IBANs and account numbers,
URLs and domains, phone numbers, user names, file ids, and short literal strings, each in a normal form."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_VALUE_CHARS = 256
MIN_LITERAL_CHARS = 4
MAX_VALUES = 64
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
ACCOUNT = re.compile(r"(?<![\w.-])\d{8,20}(?![\w.-])")
URL = re.compile(r"\b(?:https?|ftp)://[^\s'\"<>)\]]{1,255}", re.IGNORECASE)
DOMAIN = re.compile(r"(?<![\w@.-])(?:www\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}(?:/[^\s'\"<>)\]]*)?",
                    re.IGNORECASE)
PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()./-]{7,18}\d(?![\w])")
HANDLE = re.compile(r"(?<![\w@])@[A-Za-z][\w.-]{1,38}")
_NOT_DOMAINS = frozenset({"e.g", "i.e", "etc", "vs"})
_FILE_SUFFIXES = frozenset({"txt", "pdf", "csv", "json", "md", "doc", "docx", "xls", "xlsx", "png", "jpg", "py", "sh",
                            "log", "yaml", "yml", "html", "xml", "zip", "tar", "gz", "ics", "eml"})
USER_KEYS = frozenset({"user", "username", "user_name", "member", "handle", "login", "account_name", "contact",
                       "participant", "participants", "attendee", "attendees", "invitee", "assignee", "owner"})
ID_KEYS = re.compile(r"(^|_)(id|ids|file|file_id|document|doc|document_id|attachment|attachments)$")
RECIPIENT_KEYS = frozenset({"to", "cc", "bcc", "recipient", "recipients", "email", "emails", "address", "phone",
                            "channel", "iban", "account", "account_number", "receiver", "payee", "beneficiary",
                            "destination", "url", "link", "website", "webhook"})


@dataclass(frozen=True)
class Value:
    """One value found: its kind, its normal form (what is compared and hashed) and where it was (an argument path)."""

    kind: str
    normal: str
    path: str = ""

    def masked(self) -> str:
        """The value as explanations show it: enough to recognise it, not enough to reuse it."""
        text = self.normal
        if self.kind == "email":
            local, _, domain = text.partition("@")
            return f"{local[:1]}…@{domain}"
        if self.kind in ("iban", "account", "phone"):
            return f"{text[:4]}…{text[-2:]}" if len(text) > 8 else "…"
        if len(text) <= 12:
            return f"{text[:3]}…"
        return f"{text[:12]}…"


def _iban(text: str) -> str:
    return text.replace(" ", "").upper()


def _domain(text: str) -> str:
    host = text.split("/", 1)[0].lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _url(text: str) -> str:
    return text.rstrip(".,;:!?").lower()


def _phone(text: str) -> str:
    return re.sub(r"[^\d+]", "", text)


def entities(text: str) -> Iterator[Value]:
    """The e-mail addresses, IBANs, account numbers, URLs, domains, phone numbers and @handles in a text."""
    emails = []
    for match in EMAIL.finditer(text):
        emails.append(match.span())
        yield Value("email", match.group(0).lower().rstrip("."))
    for match in URL.finditer(text):
        url = _url(match.group(0))
        yield Value("url", url)
        yield Value("domain", _domain(url.split("://", 1)[1]))
    for match in DOMAIN.finditer(text):
        if any(start <= match.start() < end for start, end in emails):
            continue
        candidate = match.group(0)
        host = _domain(candidate)
        if host in _NOT_DOMAINS or host.rsplit(".", 1)[-1] in _FILE_SUFFIXES or "." not in host:
            continue
        yield Value("domain", host)
        if "/" in candidate:
            yield Value("url", candidate.rstrip(".,;:!?").lower())
    for match in IBAN.finditer(text):
        yield Value("iban", _iban(match.group(0)))
    for match in ACCOUNT.finditer(text):
        yield Value("account", match.group(0))
    for match in PHONE.finditer(text):
        digits = _phone(match.group(0))
        if 9 <= len(digits.lstrip("+")) <= 15:
            yield Value("phone", digits)
    for match in HANDLE.finditer(text):
        yield Value("user", match.group(0)[1:].lower())


def _literal(text: str) -> str:
    return " ".join(text.split()).lower()


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, leaf) for every scalar inside a JSON-like value; the key is the nearest dict key."""
    stack: list[tuple[str, str, Any]] = [(path, path.rsplit(".", 1)[-1], value)]
    while stack:
        where, key, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), str(k), v) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}.{i}", key, v) for i, v in enumerate(item))
        else:
            yield where, key, item


def argument_values(args: dict[str, Any]) -> list[Value]:
    """The values in a call's arguments, each with its argument path: the entities inside every string, the whole
    string when it is short (a name, an id, a password, a search term), and typed fields by their names."""
    found: dict[tuple[str, str], Value] = {}
    for path, key, leaf in _leaves(args, ""):
        if isinstance(leaf, bool) or leaf is None:
            continue
        text = str(leaf)
        if not text.strip():
            continue
        lowered = key.lower()
        for value in entities(text[:8192]):
            found.setdefault((value.kind, value.normal), Value(value.kind, value.normal, path))
        if len(text) <= MAX_VALUE_CHARS:
            normal = _literal(text)
            if lowered in ("iban",) or IBAN.fullmatch(text.strip().upper()):
                found.setdefault(("iban", _iban(text)), Value("iban", _iban(text), path))
            elif lowered in USER_KEYS:
                found.setdefault(("user", normal.lstrip("@")), Value("user", normal.lstrip("@"), path))
            elif ID_KEYS.search(lowered):
                found.setdefault(("file", normal), Value("file", normal, path))
            elif len(normal) >= MIN_LITERAL_CHARS and not isinstance(leaf, int | float):
                found.setdefault(("literal", normal), Value("literal", normal, path))
        if len(found) >= MAX_VALUES:
            break
    return list(found.values())[:MAX_VALUES]


_SALIENT = re.compile(r"(?<![\w@])(?=[\w!#$%&*+.-]*\d)[\w!#$%&*+.-]{4,64}(?![\w@])"
                      r"|\b[A-Z][\w'-]+(?:[ \t]+[A-Z][\w'-]+){0,3}\b")


def salient(text: str) -> set[str]:
    """The tokens of a text an attacker's request would name: ones with digits (ids, codes, passwords) and runs of
    capitalised words (names of hotels, people, files) with every shorter run inside them, in literal normal form."""
    found: set[str] = set()
    for match in _SALIENT.finditer(text[:4096]):
        words = _literal(match.group(0)).split(" ")
        found.update(" ".join(words[start:end]) for start in range(len(words))
                     for end in range(start + 1, len(words) + 1))
    return found


def is_recipient_path(path: str) -> bool:
    """True when an argument path names where something goes (a recipient, an account, a URL, a user)."""
    parts = [part for part in path.lower().split(".") if not part.isdigit()]
    return bool(parts) and (parts[-1] in RECIPIENT_KEYS or parts[-1] in USER_KEYS)


def normal_literal(text: str) -> str:
    """A text in the normal form literal values are compared in (lowercase, whitespace collapsed)."""
    return _literal(text)
