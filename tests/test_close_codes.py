"""docs/close-codes.md agrees with ``toolkit.CloseCode``, and no code writes a close code as a bare number.

``toolkit.CloseCode`` is the single source of the close codes the toolkit and its first-party
plugins send. The page's tables are read as data: every code number in them is a member, the
members table gives each member's number, whether it is sent and its default reason, and the
policy table has a row for every close the first-party packages make. The source check reads each
``.py`` file under toolkit/ and plugins/ as tokens (comments and docstrings may name numbers for
the reader) and looks for numbers of the RFC 6455 range 1000-1015 where a close code goes.
"""

from __future__ import annotations

import ast
import importlib
import io
import pkgutil
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

import toolkit
from tests.support import PLUGIN_PACKAGES
from toolkit import Close, CloseCode

ROOT: Final = Path(__file__).parent.parent
DOC: Final = ROOT / "docs" / "close-codes.md"
#: The packages whose closes the policy table must cover (the core's come from its MessageError classes).
FIRST_PARTY: Final = PLUGIN_PACKAGES


# --- the page, as data ------------------------------------------------------------------------


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of ``text``: its rows (header first, separator dropped), each a list of cells."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table(header: str) -> list[list[str]]:
    """The rows (without the header) of the page's table whose first column is ``header``."""
    (rows,) = [rows for rows in tables(DOC.read_text()) if rows[0][0] == header]
    return rows[1:]


def codes_in(cell: str) -> list[int]:
    return [int(number) for number in re.findall(r"(?<!\d)\d{4}(?!\d)", cell)]


def quoted(cell: str) -> str | None:
    """The reason a cell gives, as in `` `"rate limit"` ``; None when it gives none."""
    match = re.fullmatch(r'`"([^"`]*)"`', cell)
    return None if match is None else match.group(1)


def policy_rows() -> list[tuple[list[CloseCode], str | None]]:
    """Each row of the policy table: its codes before and after accept, and its reason."""
    return [
        ([CloseCode(code) for code in codes_in(f"{row[1]} {row[2]}")], quoted(row[3])) for row in table("Situation")
    ]


def test_the_page_has_the_tables_this_test_reads() -> None:
    assert len(table("Situation")) >= 10
    assert len(table("Member")) == len(CloseCode)


def test_every_code_number_in_the_tables_is_a_close_code_member() -> None:
    members = {int(member) for member in CloseCode}
    numbers = [code for rows in tables(DOC.read_text()) for row in rows for cell in row for code in codes_in(cell)]
    assert numbers, "no code number found: the tables changed shape"
    assert sorted(set(numbers) - members) == []


def test_the_members_table_gives_each_members_number_sending_and_default_reason() -> None:
    rows = {row[0].strip("`"): row[1:] for row in table("Member")}
    assert list(rows) == list(CloseCode.__members__)
    for name, (number, sent, reason) in rows.items():
        member = CloseCode[name]
        assert int(number) == member, name
        assert sent.startswith("never") == (not member.sendable), name
        assert quoted(reason) == member.reason, name


# --- the closes the packages make -------------------------------------------------------------


def modules(package: str) -> Iterator[ModuleType]:
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.rsplit(".", 1)[-1] != "__main__":  # running it would start a program
            yield importlib.import_module(info.name)


def closes_of(module: ModuleType) -> set[tuple[CloseCode, str]]:
    """The ``Close`` actions a module defines: at module level, or inside a module-level dict, tuple or set."""
    found: set[tuple[CloseCode, str]] = set()
    for value in vars(module).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple | frozenset) else ()
        for item in (value, *items):
            if isinstance(item, Close):
                found.add((CloseCode(item.code), item.reason))
    return found


def first_party_closes() -> set[tuple[CloseCode, str]]:
    """Every close the first-party packages define, and the core's message errors."""
    found = {(CloseCode(error.close_code), error.close_reason) for error in _message_errors()}
    for package in FIRST_PARTY:
        for module in modules(package):
            found |= closes_of(module)
    return found


def _message_errors() -> list[type[toolkit.MessageError]]:
    return [toolkit.MessageError, toolkit.UnexpectedFrameType, toolkit.InvalidJSON, toolkit.InvalidUTF8]


def test_the_packages_define_the_closes_this_test_knows_of() -> None:
    # A guard for the collection itself: it must see the plugins' named closes.
    closes = first_party_closes()
    assert {
        (CloseCode.POLICY_VIOLATION, "unauthorized"),
        (CloseCode.POLICY_VIOLATION, "rate limit"),
        (CloseCode.TRY_AGAIN_LATER, "rate limit"),
        (CloseCode.UNSUPPORTED_DATA, "invalid JSON"),
        (CloseCode.UNSUPPORTED_DATA, "malformed message"),
        (CloseCode.POLICY_VIOLATION, "invalid message"),
        (CloseCode.MESSAGE_TOO_BIG, "message too big"),
        (CloseCode.TRY_AGAIN_LATER, "too slow"),
        (CloseCode.POLICY_VIOLATION, "join first"),
    } <= closes


def test_every_first_party_close_has_its_row_in_the_policy_table() -> None:
    rows = policy_rows()
    missing = [
        (f"{code:d}", reason)
        for code, reason in sorted(first_party_closes())
        if not any(code in codes and reason == row_reason for codes, row_reason in rows)
    ]
    assert missing == []


def test_each_policy_row_gives_its_codes_default_reason_or_a_named_one() -> None:
    closes = first_party_closes()
    for codes, reason in policy_rows():
        sendable = [code for code in codes if code.sendable]
        if not sendable:
            assert reason is None, f"a reason for codes that are never sent: {codes}"
            continue
        assert reason is not None, f"no reason for {sendable}"
        assert any(reason == code.reason or (code, reason) in closes for code in sendable), (sendable, reason)


def members_named_in_code() -> set[CloseCode]:
    """The members the core and plugins name (``CloseCode.X``), outside the enum's own module."""
    named: set[CloseCode] = set()
    for path in source_files():
        if path != CLOSE_MODULE:
            for line in logical_lines(path.read_text()):
                named |= {CloseCode[name] for name in re.findall(r"\bCloseCode\s*\.\s*([A-Z_]+)\b", line.text)}
    return named


def test_every_sendable_member_in_use_has_a_row_in_the_policy_table() -> None:
    used = members_named_in_code() | {code for code, _ in first_party_closes()}
    in_rows = {code for codes, _ in policy_rows() for code in codes}
    assert {member for member in used if member.sendable} - in_rows == set()


# --- no bare close-code number in the source ----------------------------------------------------

CLOSE_MODULE: Final = ROOT / "toolkit" / "_close.py"
#: RFC 6455's registered codes, 1000-1015: a number in this range where a close code goes is one.
_CODE: Final = r"\b10(?:0\d|1[0-5])\b"
#: Where a close code goes, in a logical line of tokens joined by spaces (comments and docstrings gone).
BARE_CODE: Final = re.compile(
    "|".join(
        [
            rf"{_CODE}\s*,\s*[rbfuRBFU]*[\"']",  # with a reason: Close(1009, "..."), _end(1006, ""), (1011, "...")
            rf"(?i:close|disconnect|_end)\w*\s*\(\s*(?:code\s*=\s*)?{_CODE}",  # close(1011, Close(1009, ...(code=1006)
            rf"\w*code\w*\s*(?::\s*[\w\[\]., |]+?\s*)?(?:=|==|!=)\s*{_CODE}",  # code: int = 1000, close_code = 1003
            rf"[\"']code[\"']\s*[:,]\s*{_CODE}",  # "code": 1000, .get("code", 1000)
            rf"(?:==|!=|<=|>=|<|>|\bis\b|\bin\b)\s*(?:not\s+)?{_CODE}",  # == 1011, in 1000
            rf"{_CODE}\s*(?:==|!=|<=|>=|<|>)",  # 1011 == code
            rf"{_CODE}\s*,\s*{_CODE}",  # {1008, 1013}, (1000, 1001)
            rf"\b(?:or|else)\s+{_CODE}",  # message.get("code") or 1000
        ]
    )
)


class Line:
    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text


def logical_lines(source: str) -> Iterator[Line]:
    """Each logical line as its tokens joined by spaces, without comments and docstrings (string statements)."""
    tokens: list[str] = []
    start = 0
    kinds: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if tokens and kinds != {tokenize.STRING}:  # a statement that is only a string is a docstring
                yield Line(start, " ".join(tokens))
            tokens, kinds = [], set()
            continue
        if token.type in skip:
            continue
        if not tokens:
            start = token.start[0]
        tokens.append(token.string)
        kinds.add(token.type)


def definitions(source: str) -> set[int]:
    """Lines of module- and class-level assignments to UPPER_CASE names: the defining module's tables."""
    lines: set[int] = set()
    tree = ast.parse(source)
    scopes: list[ast.Module | ast.ClassDef] = [tree, *(node for node in tree.body if isinstance(node, ast.ClassDef))]
    for scope in scopes:
        for node in scope.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if targets and all(isinstance(t, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", t.id) for t in targets):
                lines.add(node.lineno)
    return lines


def bare_codes(source: str, *, defining: bool = False) -> list[str]:
    """The logical lines that write a close code as a bare number (``defining``: toolkit/_close.py's rules)."""
    exempt = definitions(source) if defining else set()
    return [
        f"{line.number}: {line.text}"
        for line in logical_lines(source)
        if line.number not in exempt and BARE_CODE.search(line.text)
    ]


def source_files(*tops: str) -> list[Path]:
    return sorted(path for top in tops or ("toolkit", "plugins") for path in (ROOT / top).rglob("*.py"))


def bare_codes_under(top: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{finding}"
        for path in source_files(top)
        for finding in bare_codes(path.read_text(), defining=path == CLOSE_MODULE)
    ]


#: What the plugins and the core wrote before CloseCode (taken from the source as it was), and the
#: forms the check must catch.
CAUGHT: Final = [
    '_TOO_BIG: Final = Close(1009, "message too big")',
    '_INTERNAL_ERROR: Final = Close(1011, "internal error")',
    "_RATE_LIMIT_CODES: Final = frozenset({1008, 1013})",
    "        close_code: int = 1008,",
    '_UNSUPPORTED: Final = Close(1003, "unsupported data")',
    '_NOT_UTF8: Final = Close(1007, "invalid utf-8")',
    '_UNAUTHORIZED_CLOSE: Final = Close(1008, "unauthorized")',
    'TOO_SLOW: Final = (1013, "too slow")',
    "level = logging.WARNING if code == 1011 or closed_by is ClosedBy.SERVER else logging.INFO",
    'self._disconnect_app(message.get("code") or 1000, message.get("reason") or "")',
    'self._disconnect_app(1006, "")',
    'self._from_app.send_nowait({"type": "websocket.close", "code": 1011 if error else 1000, "reason": ""})',
    "async def close(self, code: int = 1000, reason: str = '') -> None: ...",
    'message = {**message, "code": 1005}',
    "code = 1005",
    "raise WebSocketDisconnect(code=1006) from None",
    "self._end(1006, '', ClosedBy.CLIENT)",
    "code, reason = 1006, ''",
    "self._code = 1006",
    "close_code: ClassVar[int] = 1003",
    "await websocket.close(\n    1011,\n    reason,\n)",
    "if code != 1000: ...",
    "if code in (1000, 1001): ...",
    "_SENDABLE: Final = frozenset({1000, 1001})  # the defining module's table, anywhere else",
]
#: What it must leave alone.
LEFT: Final = [
    '"""Close with 1009 "message too big" when a message exceeds ``max_bytes``."""',
    "# close 1011: an app bug",
    "def f() -> None:\n    '''Closes with 1011.'''\n",
    "_MAX_FIELD: Final = 1024",
    "MessageSizeLimit(64 * 1024)",
    "_TOO_BIG: Final = Close.of(CloseCode.MESSAGE_TOO_BIG)",
    "async def close(self, code: int = CloseCode.NORMAL, reason: str = '') -> None: ...",
    'logger.warning("the app sent %d bytes; closing with %d", size, CloseCode.INTERNAL_ERROR)',
    "timeout = 1016",
    "port = 10000",
]


@pytest.mark.parametrize("source", CAUGHT)
def test_the_check_catches_bare_close_codes(source: str) -> None:
    assert bare_codes(source) != []


@pytest.mark.parametrize("source", LEFT)
def test_the_check_leaves_prose_other_numbers_and_members_alone(source: str) -> None:
    assert bare_codes(source) == []


def test_the_enum_module_defines_the_numbers_and_is_not_flagged_for_it() -> None:
    source = CLOSE_MODULE.read_text()
    assert bare_codes(source, defining=True) == []
    # The exemption is for its definitions only: the same table in a function would be flagged.
    assert bare_codes(source) != []
    assert bare_codes("def check(code: int) -> bool:\n    return code in {1000, 1001}\n", defining=True) != []


def test_no_bare_close_code_in_the_plugins() -> None:
    assert bare_codes_under("plugins") == []


def test_no_bare_close_code_in_the_core() -> None:
    assert bare_codes_under("toolkit") == []
