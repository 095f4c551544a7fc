"""docs/client.md must agree with the client libraries.

Every ```python block of the guide must compile, and every name it imports from sealchat must
exist. Calls in the blocks on ``client`` and on imported callables must fit the real
signatures, and so must the signatures quoted in the text (``history(*, room="", …)``).
Records quoted with fields (``Presence(user, online)``) must have those fields, and the table of
``connect`` options must list exactly the options there are.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sealchat.core

DOC = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [
    (DOC.count("\n", 0, match.start()) + 1, match.group(2))
    for match in FENCE.finditer(DOC)
    if match.group(1) == "python"
]
PROSE = FENCE.sub("", DOC)
SPAN = re.compile(r"`([^`]+)`")
QUOTED_CALL = re.compile(r"(?:\w+\.)*(\w+)\(([^()]*)\)")

FALLBACKS = {
    "sealchat.transports.trio": (
        "sealchat.transports.trio_client",
        "sealchat.transports.trio_server",
    ),
    "sealchat.transports.blocking": (
        "sealchat.transports.blocking_client",
        "sealchat.transports.blocking_server",
    ),
}
"""Where the names of the public transport modules live, for a tree that lacks those modules."""


def modules(name: str) -> list[ModuleType]:
    """The module ``name``, or the modules it stands for if it does not exist yet."""
    try:
        return [importlib.import_module(name)]
    except ModuleNotFoundError as exc:
        if exc.name != name or name not in FALLBACKS:
            raise
        return [importlib.import_module(fallback) for fallback in FALLBACKS[name]]


def lookup(module: str, name: str) -> Any:
    for candidate in modules(module):
        if hasattr(candidate, name):
            return getattr(candidate, name)
    raise AttributeError(f"{module} has no {name}")


CHAT_CLIENT = lookup("sealchat.transports.trio", "ChatClient")
BLOCKING_CLIENT = lookup("sealchat.transports.blocking", "BlockingClient")
CONNECT = lookup("sealchat.transports.trio", "connect")
LINK_STATE = lookup("sealchat.transports.trio", "LinkState")


def block_ids() -> list[str]:
    return [f"line {line}" for line, _ in BLOCKS]


def imports(tree: ast.Module) -> dict[str, Any]:
    """The objects a block imports from sealchat, by the name the block uses."""
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sealchat"):
            assert node.module is not None
            for alias in node.names:
                found[alias.asname or alias.name] = lookup(node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sealchat"):
                    importlib.import_module(alias.name)
    return found


# --- the code blocks ----------------------------------------------------------------------


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=block_ids())
def test_example_compiles(line: int, code: str) -> None:
    compile(code, f"docs/client.md:{line}", "exec")


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=block_ids())
def test_example_imports_exist(line: int, code: str) -> None:
    tree = ast.parse(code, f"docs/client.md:{line}")
    try:
        imports(tree)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"docs/client.md:{line}: {exc}")


def bind(signature: inspect.Signature, call: ast.Call, *, first: int = 0) -> None:
    """Bind the arguments of ``call`` (as placeholders) to ``signature`` after ``first`` other
    positional ones; TypeError if they do not fit."""
    positional = [None] * (first + len(call.args))
    keywords = {k.arg: None for k in call.keywords if k.arg is not None}
    signature.bind(*positional, **keywords)


def check_call(call: ast.Call, names: dict[str, Any], client: type | None) -> str | None:
    """What is wrong with ``call``, if it calls something this test knows."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    func = call.func
    try:
        if isinstance(func, ast.Name) and callable(names.get(func.id)):
            target = names[func.id]
            if isinstance(target, type) and issubclass(target, BaseException):
                return None  # exceptions take any message
            bind(inspect.signature(target), call)
            if target is CONNECT:  # ChatClient(host, port, nursery, **options)
                bind(inspect.signature(CHAT_CLIENT), call, first=1)
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "client"
            and client is not None
        ):
            method = getattr(client, func.attr, None)
            if not callable(method):
                return f"{client.__name__} has no method {func.attr}"
            bind(inspect.signature(method), call, first=1)
    except TypeError as exc:
        return f"{ast.unparse(call)}: {exc}"
    return None


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=block_ids())
def test_example_calls_fit_the_signatures(line: int, code: str) -> None:
    """Calls on imported names, and on ``client`` (the guide's name for a client), must fit."""
    tree = ast.parse(code)
    names = imports(tree)
    values = list(names.values())
    client = (
        BLOCKING_CLIENT
        if BLOCKING_CLIENT in values
        else CHAT_CLIENT
        if CHAT_CLIENT in values or CONNECT in values
        else None
    )
    problems = [
        problem
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and (problem := check_call(node, names, client))
    ]
    assert not problems, f"docs/client.md:{line}: " + "; ".join(problems)


# --- signatures and fields quoted in the text ---------------------------------------------


def quoted_calls() -> list[tuple[str, str, str]]:
    """Every inline code span of the prose that looks like ``name(params)``, with params."""
    found = []
    for span in SPAN.findall(PROSE):
        text = " ".join(span.split())
        match = QUOTED_CALL.fullmatch(text)
        if match and match.group(2).strip():
            found.append((text, match.group(1), match.group(2)))
    return found


def callables_named(name: str) -> list[Any]:
    """The client libraries' public functions, methods and classes called ``name`` (records
    are left to ``test_quoted_record_fields_are_real``)."""
    found = [
        getattr(cls, name)
        for cls in (CHAT_CLIENT, BLOCKING_CLIENT)
        if not name.startswith("_") and inspect.isfunction(getattr(cls, name, None))
    ]
    pinning = importlib.import_module("sealchat.transports.pinning")
    public = {
        "connect": CONNECT,
        "BlockingClient": BLOCKING_CLIENT,
        "client_key": lookup("sealchat.transports.trio", "client_key"),
        "KnownServers": pinning.KnownServers,
        "pinned": pinning.pinned,
        "server_name": pinning.server_name,
    }
    return [*found, public[name]] if name in public else found


def default_text(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def fits(quoted: str, target: Any) -> str | None:
    """Why the quoted parameter list does not describe ``target``, or None if it does."""
    real = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    by_name = {p.name: p for p in real}
    keyword_only = False
    named: list[str] = []
    for part in (p.strip() for p in quoted.split(",")):
        if part == "*":
            keyword_only = True
            continue
        name, _, default = part.lstrip("*").partition("=")
        param = by_name.get(name)
        if param is None:
            return f"no parameter {name}"
        if keyword_only != (param.kind is inspect.Parameter.KEYWORD_ONLY):
            return f"{name} is {param.kind.description}"
        if default and default_text(param.default) != default:
            return f"{name} defaults to {default_text(param.default)}"
        named.append(name)
    positional = [n for n in named if by_name[n].kind is not inspect.Parameter.KEYWORD_ONLY]
    if positional != [p.name for p in real if p.name in positional]:
        return "the positional parameters are out of order"
    missing = [
        p.name
        for p in real
        if p.name not in named
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return f"{', '.join(missing)} left out" if missing else None


def test_quoted_signatures_are_real() -> None:
    checked, problems = 0, []
    for text, name, params in quoted_calls():
        targets = callables_named(name)
        if not targets:
            continue
        checked += 1
        reasons = [fits(params, target) for target in targets]
        if all(reasons):
            problems.append(f"`{text}`: {'; '.join(dict.fromkeys(r for r in reasons if r))}")
    assert not problems
    assert checked >= 10


def test_quoted_record_fields_are_real() -> None:
    records = {
        name: obj
        for name, obj in vars(sealchat.core).items()
        if isinstance(obj, type) and hasattr(obj, "__struct_fields__")
    }
    records["LinkState"] = LINK_STATE
    checked, problems = 0, []
    for text, name, params in quoted_calls():
        record = records.get(name)
        if record is None:
            continue
        checked += 1
        fields = set(getattr(record, "__struct_fields__", None) or record.__dataclass_fields__)
        for part in params.split(","):
            field = part.strip().partition("=")[0]
            if field not in fields:
                problems.append(f"`{text}`: {name} has no field {field}")
    assert not problems
    assert checked >= 5


def test_connect_options_table_lists_every_option() -> None:
    start = PROSE.index("The options of `connect`")
    rows = re.findall(r"^\| `(\w+)` \|", PROSE[start:].split("\n\n", 2)[1], re.MULTILINE)
    options = [
        p.name
        for p in inspect.signature(CHAT_CLIENT).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert sorted(rows) == sorted(options)


def test_the_public_modules_may_be_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a tree without sealchat.transports.trio / .blocking, their names are looked up in
    the modules they re-export."""
    for public in FALLBACKS:
        monkeypatch.setitem(sys.modules, public, None)  # makes importing it fail
    assert lookup("sealchat.transports.trio", "connect") is CONNECT
    assert lookup("sealchat.transports.trio", "TrioServer").__name__ == "TrioServer"
    assert lookup("sealchat.transports.blocking", "BlockingClient") is BLOCKING_CLIENT
    assert lookup("sealchat.transports.blocking", "ThreadedServer").__name__ == "ThreadedServer"
    with pytest.raises(AttributeError):
        lookup("sealchat.transports.trio", "NoSuchThing")
