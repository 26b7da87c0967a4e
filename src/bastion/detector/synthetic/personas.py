"""Normal personas: the tool use of an analyst, developer, ops engineer, scripter, researcher, support agent
and data engineer."""

from collections.abc import Callable
from typing import Any

from bastion.detector.synthetic.session import (
    MODULES,
    WORDS,
    SessionBuilder,
    file_name,
    maybe_benign_denial,
    workspace_path,
)


def _analyst(s: SessionBuilder, length: int) -> None:
    """Data analyst: list and read data files, analyse them in Python, write a report."""
    rng = s.rng
    data_dir = rng.choice(("data", "datasets", "input"))
    s.call("fs.list", rng.choice(({"path": data_dir}, {"path": f"/workspace/{data_dir}"}, {})))
    files = [file_name(rng, rng.choice(("csv", "csv", "json", "parquet"))) for _ in range(3)]
    while len(s.out.events) < length:
        roll = rng.random()
        file = rng.choice(files)
        path = workspace_path(rng, data_dir, file)
        col = rng.choice(("revenue", "region", "user_id", "count", "date", "price"))
        if roll < 0.2:
            args: dict[str, Any] = {"path": path}
            if not maybe_benign_denial(s, "fs.read", args):
                s.call("fs.read", args)
        elif roll < 0.7:
            code = rng.choice(
                (
                    f"import pandas as pd\ndf = pd.read_csv('{path}')\nprint(df.describe())",
                    f"import pandas as pd\ndf = pd.read_csv('{path}')\nprint(df.groupby('{col}').size().head(20))",
                    f"import csv\nwith open('{path}') as f:\n    rows = list(csv.DictReader(f))\nprint(len(rows))",
                    f"import json\ndata = json.load(open('{path}'))\nprint(type(data), len(data))",
                    f"df = df[df['{col}'].notna()]\nprint(df['{col}'].mean())",
                    f"import statistics\nprint(statistics.median([{rng.randint(1, 99)}, 7]))",
                    f"print(df.head({rng.randint(3, 20)}))",
                )
            )
            if not maybe_benign_denial(s, "python.run", {"code": code}):
                s.call("python.run", {"code": code})
        elif roll < 0.85:
            report = workspace_path(rng, "out", file_name(rng, rng.choice(("md", "csv", "txt"))))
            content = f"# {col} summary\n\n" + "\n".join(f"- {w}: {rng.random():.3f}" for w in WORDS[:5])
            s.call("fs.write", {"path": report, "content": content})
        elif roll < 0.95:
            s.call("fs.list", {"path": rng.choice((data_dir, "out", "."))})
        else:
            s.call("shell.run", {"command": rng.choice((f"head -n 5 {path}", f"wc -l {path}", "ls -la"))})


def _developer(s: SessionBuilder, length: int) -> None:
    """Developer: read and write code, run tests and linters, read logs, use git."""
    rng = s.rng
    s.call("fs.list", rng.choice(({"path": "src"}, {}, {"path": "/workspace"})))
    while len(s.out.events) < length:
        roll = rng.random()
        module = rng.choice(MODULES)
        src = workspace_path(rng, "src", f"{module}.py")
        if roll < 0.25:
            s.call("fs.read", {"path": rng.choice((src, workspace_path(rng, "logs", "test.log"), "README.md"))})
        elif roll < 0.45:
            body = "\n".join(
                f"def {rng.choice(WORDS)}_{i}(x: int) -> int:\n    return x * {rng.randint(2, 9)}\n"
                for i in range(rng.randint(1, 6))
            )
            if rng.random() < 0.1:
                body += "\n# see https://docs.python.org/3/library/functions.html\n"
            s.call("fs.write", {"path": src, "content": body})
        elif roll < 0.8:
            command = rng.choice(
                (
                    "python -m pytest -q",
                    f"python -m pytest -q tests/test_{module}.py",
                    "python -m pytest -x -q 2>&1 | tail -n 30",
                    "ruff check src",
                    "git status --short",
                    "git diff --stat",
                    f"git log --oneline -n {rng.randint(3, 15)}",
                    f"grep -rn '{rng.choice(WORDS)}' src",
                    "ls -la src tests",
                    f"python -c 'import {module}; print({module}.__name__)'",
                    "pip list 2>/dev/null | head -n 20",
                    f"wc -l src/*.py && cat src/{module}.py | head -n 40",
                    "pip install -q -r requirements.txt",
                    "curl -sSf https://pypi.org/pypi/requests/json | head -c 300",
                    f"git clone --depth 1 https://github.com/psf/{rng.choice(('requests', 'black'))}.git",
                )
            )
            args = {"command": command}
            if "pytest" in command and rng.random() < 0.5:
                args["timeout_s"] = rng.choice((30, 60, 120))
            if maybe_benign_denial(s, "shell.run", args):
                continue
            if "pytest" in command:
                s.call("shell.run", args, duration_ms=s.lognormal(900.0, 0.9, 50, 60_000))
            else:
                s.call("shell.run", args)
        elif roll < 0.92:
            code = rng.choice(
                (
                    f"print(sorted([{rng.randint(0, 9)}, 3, 1]))",
                    f"import re\nprint(re.findall(r'\\d+', 'a{rng.randint(1, 999)}b'))",
                    "import sys\nprint(sys.version)",
                    "from pathlib import Path\nprint(len(list(Path('src').glob('*.py'))))",
                )
            )
            s.call("python.run", {"code": code})
        else:
            s.call("fs.list", {"path": rng.choice(("src", "tests", "logs"))})


def _ops(s: SessionBuilder, length: int) -> None:
    """Operator: status commands, log tails and config reads."""
    rng = s.rng
    while len(s.out.events) < length:
        roll = rng.random()
        if roll < 0.7:
            command = rng.choice(
                (
                    "uptime",
                    "df -h",
                    "free -m",
                    "date -u",
                    "ps aux --sort=-%mem | head -n 10",
                    f"tail -n {rng.choice((20, 50, 100))} /workspace/logs/app.log",
                    f"grep -c ERROR /workspace/logs/{rng.choice(('app', 'worker', 'cron'))}.log",
                    "du -sh /workspace/*",
                    "ls -la /var/log",
                    "python3 --version",
                    "cat /workspace/status.json",
                    "nproc",
                    "uname -r",
                    f"sleep {rng.choice((1, 2, 5))} && echo done",
                    "ls /usr/lib/python3/dist-packages | wc -l",
                )
            )
            args: dict[str, Any] = {"command": command}
            if rng.random() < 0.2:
                args["timeout_s"] = rng.choice((5, 10, 30))
            if not maybe_benign_denial(s, "shell.run", args):
                s.call("shell.run", args)
        elif roll < 0.85:
            s.call(
                "fs.read",
                {"path": rng.choice(("config/app.yaml", "/workspace/status.json", "logs/cron.log"))},
            )
        elif roll < 0.93:
            s.call("fs.list", {"path": rng.choice(("logs", "/workspace/config", "."))})
        else:
            s.call(
                "python.run",
                {"code": f"import shutil\nprint(shutil.disk_usage('/workspace').free // {10**6})"},
            )


def _scripter(s: SessionBuilder, length: int) -> None:
    """Automation or integration script: short echo/ls/cat commands, tiny snippets, small files."""
    rng = s.rng
    while len(s.out.events) < length:
        roll = rng.random()
        name = rng.choice(("hello.txt", "notes.txt", "a.txt", "out.txt", "data.json", "note.md", "x.py"))
        path = workspace_path(rng, name)
        if roll < 0.4:
            command = rng.choice(
                (
                    f"echo {rng.choice(('hello', 'hi', 'ok', 'test', 'done', 'hello world'))}",
                    "ls",
                    "ls -la",
                    "pwd",
                    f"cat {path}",
                    f"echo {rng.randint(0, 999)} > {name}",
                    "whoami",
                    f"sleep 0.{rng.randint(1, 5)}",
                    f"exit {rng.randint(1, 3)}",
                    "echo oops >&2",
                    f"python3 -c 'print({rng.randint(1, 99)} * {rng.randint(1, 99)})'",
                    "env | wc -l",
                    "true",
                    f"wc -c {name}",
                )
            )
            args: dict[str, Any] = {"command": command}
            if rng.random() < 0.15:
                args["timeout_s"] = rng.choice((1, 2, 5, 10))
            if rng.random() < 0.05:
                args["stdin"] = "hello\n"
            if not maybe_benign_denial(s, "shell.run", args):
                s.call("shell.run", args)
        elif roll < 0.6:
            code = rng.choice(
                (
                    f"print({rng.randint(1, 99)} + {rng.randint(1, 99)})",
                    "print('hello')",
                    f"print(sum(range({rng.randint(5, 1000)})))",
                    "import math\nprint(math.pi)",
                    f"x = [i * i for i in range({rng.randint(2, 50)})]\nprint(x[-1])",
                    "import os\nprint(os.getcwd())",
                    "raise SystemExit(1)",
                )
            )
            if not maybe_benign_denial(s, "python.run", {"code": code}):
                s.call("python.run", {"code": code})
        elif roll < 0.78:
            content = rng.choice(("hello", "hello world\n", f"{rng.random()}", '{"a": 1}', "line1\nline2\n"))
            s.call("fs.write", {"path": path, "content": content})
        elif roll < 0.92:
            s.call("fs.read", {"path": path})
        else:
            s.call("fs.list", rng.choice(({}, {"path": "."}, {"path": "/workspace"})))


def _researcher(s: SessionBuilder, length: int) -> None:
    """Research assistant: custom tools (search, fetch, calculator) plus notes in the workspace."""
    rng = s.rng
    while len(s.out.events) < length:
        roll = rng.random()
        topic = rng.choice(WORDS)
        if roll < 0.35:
            s.call(
                rng.choice(("web.search", "kb.search")),
                {"query": f"{topic} trends {rng.randint(2019, 2025)}"},
            )
        elif roll < 0.55:
            s.call(
                "http.get",
                {
                    "url": f"https://{rng.choice(('en.wikipedia.org', 'arxiv.org', 'example.com'))}/{topic}",
                    "timeout_s": rng.choice((5, 10)),
                },
            )
        elif roll < 0.6:
            url = f"https://api.{rng.choice(('github.com', 'crossref.org', 'openalex.org'))}/search?q={topic}"
            code = rng.choice(
                (
                    f"import requests\nr = requests.get('{url}', timeout=10)\nprint(r.status_code, len(r.text))",
                    f"import urllib.request\nprint(urllib.request.urlopen('{url}').read()[:200])",
                )
            )
            s.call("python.run", {"code": code}, duration_ms=s.lognormal(600.0, 0.8, 50, 20_000))
        elif roll < 0.68:
            s.call("calc", {"expression": f"{rng.randint(1, 999)} * {rng.random():.2f}"})
        elif roll < 0.85:
            s.call(
                "fs.write",
                {
                    "path": workspace_path(rng, "notes", f"{topic}.md"),
                    "content": f"# {topic}\nsource: https://arxiv.org/abs/{rng.randint(1000, 9999)}\n",
                },
            )
        else:
            s.call("fs.read", {"path": workspace_path(rng, "notes", f"{topic}.md")})


_CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne", "wonka", "tyrell")


_TABLES = ("orders", "customers", "events", "payments", "sessions", "inventory")


def _support(s: SessionBuilder, length: int) -> None:
    """Support agent: knowledge-base searches, tickets, and replies to the agent's own customers."""
    rng = s.rng
    number = int(s.agent_id.rsplit("-", 1)[-1])
    customers = [f"{name}.com" for name in _CUSTOMERS[number % 4 : number % 4 + 5]]
    while len(s.out.events) < length:
        roll = rng.random()
        ticket = rng.randint(1000, 1060)
        if roll < 0.3:
            s.call(
                "kb.search", {"query": f"{rng.choice(WORDS)} {rng.choice(('refund', 'login', 'invoice', 'export'))}"}
            )
        elif roll < 0.55:
            s.call("ticket.get", {"id": ticket})
        elif roll < 0.75:
            body = f"Hello,\n\nThanks for reaching out about ticket {ticket}. {rng.choice(WORDS).title()} is fixed."
            s.call("ticket.reply", {"id": ticket, "body": body})
        elif roll < 0.9:
            s.call(
                "email.send",
                {
                    "to": f"{rng.choice(('billing', 'it', 'ops', 'admin'))}@{rng.choice(customers)}",
                    "subject": f"Re: ticket {ticket}",
                    "body": f"Your {rng.choice(WORDS)} request is resolved.",
                },
            )
        else:
            s.call(
                "fs.read", {"path": workspace_path(rng, "templates", f"{rng.choice(('reply', 'refund', 'close'))}.md")}
            )


def _data_engineer(s: SessionBuilder, length: int) -> None:
    """Data engineer: SQL queries, ETL snippets over staging files, outputs written back to the workspace."""
    rng = s.rng
    while len(s.out.events) < length:
        roll = rng.random()
        table = rng.choice(_TABLES)
        if roll < 0.35:
            query = rng.choice(
                (
                    f"SELECT count(*) FROM {table}",
                    f"SELECT * FROM {table} WHERE updated_at > now() - interval '1 day' LIMIT {rng.choice((10, 100))}",
                    f"SELECT {rng.choice(('region', 'status', 'day'))}, sum(amount) FROM {table} GROUP BY 1",
                )
            )
            s.call("sql.query", {"query": query})
        elif roll < 0.65:
            code = rng.choice(
                (
                    f"import csv\nrows = list(csv.DictReader(open('staging/{table}.csv')))\nprint(len(rows))",
                    f"import json\nprint(len(json.load(open('staging/{table}.json'))))",
                    f"rows = [r for r in open('staging/{table}.csv') if r.strip()]\nprint(rows[0])",
                )
            )
            s.call("python.run", {"code": code}, duration_ms=s.lognormal(400.0, 0.8, 20, 20_000))
        elif roll < 0.8:
            s.call(
                "fs.write", {"path": workspace_path(rng, "out", f"{table}_clean.csv"), "content": "id,amount\n1,2\n"}
            )
        elif roll < 0.92:
            s.call(
                "shell.run",
                {"command": rng.choice(("ls staging", "wc -l staging/*.csv", f"head -n 3 staging/{table}.csv"))},
            )
        else:
            s.call("fs.list", {"path": rng.choice(("staging", "out"))})


PERSONA_BUILDERS: dict[str, Callable[[SessionBuilder, int], None]] = {
    "analyst": _analyst,
    "developer": _developer,
    "ops": _ops,
    "scripter": _scripter,
    "researcher": _researcher,
    "support": _support,
    "data_engineer": _data_engineer,
}
