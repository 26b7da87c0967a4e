"""What a user's task asks the agent to do, as tool effects, read from its verbs (no model)."""

import re

_VERBS: dict[str, tuple[str, ...]] = {
    "pay": ("pay", "pays", "paid", "transfer", "transfers", "wire", "refund", "reimburse", "settle", "send money",
            "book", "booking", "reserve", "reservation", "rent", "buy", "purchase", "order", "subscribe",
            "standing order", "scheduled transaction", "schedule a transaction", "schedule a payment"),
    "send": ("send", "sends", "email", "e-mail", "mail", "reply", "respond", "forward", "message", "dm", "post",
             "notify", "invite", "write to", "text", "contact", "announce", "share"),
    "share": ("share", "grant", "give access", "invite", "add", "publish", "upload"),
    "delete": ("delete", "remove", "cancel", "clear", "erase", "unsubscribe", "archive"),
    "configure": ("update", "change", "set", "reset", "modify", "edit", "rename", "reschedule", "move", "adjust",
                  "enable", "disable", "switch", "replace", "correct", "fix"),
    "write": ("create", "add", "write", "draft", "save", "schedule", "note", "append", "make", "put", "organize",
              "book", "reserve", "plan", "record", "log"),
}
_PATTERNS = {effect: re.compile(r"\b(" + "|".join(re.escape(verb) for verb in verbs) + r")\b", re.IGNORECASE)
             for effect, verbs in _VERBS.items()}
VAGUE = re.compile(r"\b(do (what|as|the (actions?|tasks?|things?|steps?))|follow (the )?(instructions?|steps?)|"
                   r"whatever|as (described|instructed|specified|requested)|(actions?|tasks?|todos?|to-dos?) "
                   r"(in|from|listed|specified|mentioned))\b", re.IGNORECASE)


def intended_effects(task: str | None) -> frozenset[str] | None:
    """The effects the task's verbs ask for (`read` is always allowed); None when it cannot say what is out of scope:
    no task, a task that names no action ("summarize my inbox"), or one that defers to instructions found elsewhere
    ("do the actions in the e-mail")."""
    if not task or not task.strip() or VAGUE.search(task):
        return None
    named = {effect for effect, pattern in _PATTERNS.items() if pattern.search(task)}
    return frozenset({"read", *named}) if named else None
