"""``RedactingFilter``: credentials redacted and control characters escaped in *any* logger's records.

``ConnectionLogger`` cleans what it logs itself; the server and the libraries below it do not.
At DEBUG, uvicorn's WebSocket implementations log every handshake header (``Sec-WebSocket-Protocol``
with a browser's token, ``Authorization``, ``Cookie``) and every frame, close reasons raw; the
access line holds the query string. Installed on the handlers, this filter sees every record they
write, whatever logger it came from.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Final, final
from urllib.parse import unquote_plus

from ._logger import DEFAULT_REDACT_HEADERS, DEFAULT_REDACT_KEYS, REDACTED, Names, escape_char

__all__ = ["RedactingFilter"]

#: RFC 7230 token characters, less ``'`` (which closes the token in a Python repr such as ``['bearer.x']``).
_TOKEN_CHARS: Final = r"A-Za-z0-9!#$%&*+\-.^_`|~"  # noqa: S105 - not a password
#: ``Name: value`` (a header as HTTP and the websockets library print it); the value runs to the line's end.
_HEADER_NAME: Final = re.compile(rf"(?<![{_TOKEN_CHARS}])([{_TOKEN_CHARS}]+):[ \t]*")
#: ``(b'name', b'value')``: a header in the repr of an ASGI scope (uvicorn's TRACE lines).
_HEADER_TUPLE: Final = re.compile(r"""\((b?['"])([^'"]+)['"],\s*b?['"]([^'"]*)['"]\)""")
#: ``name=value`` in a query string, a cookie header or a logfmt line. Only ``name=`` is consumed (the
#: value is looked ahead at), so ``a=token=x`` still finds ``token=x``.
_NAME_VALUE: Final = re.compile(r"""([^\s&;=?#"',()<>\[\]{}]+)=(?=([^\s&;"',=)\]}>]*))""")
_UNREADABLE: Final = "[log record could not be formatted, so it is not shown]"


def _escape_controls(text: str) -> str:
    # Unlike ConnectionLogger's fields, backslashes stay single: records it already escaped pass
    # through unchanged, and running the filter twice (two handlers) changes nothing.
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else escape_char(char) for char in text)


def _escape_controls_keep_lines(text: str) -> str:
    return "\n".join(_escape_controls(line) for line in text.split("\n"))


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a collection of strings, not a single string")
    checked: list[str] = []
    for value in values:
        unchecked: object = value  # run-time check of untyped input
        if not isinstance(unchecked, str) or not value:
            raise ValueError(f"{what} must contain non-empty strings")
        checked.append(value)
    return tuple(checked)


@final
class RedactingFilter(logging.Filter):
    """A ``logging.Filter`` that redacts credentials and escapes control characters in every record it sees.

    Install it on handlers (``handler.addFilter(RedactingFilter(...))`` or the ``filters`` of a
    ``dictConfig`` handler): a handler's filters see the records of every logger that reaches it,
    a logger's filters only the records logged on that very logger. It never drops a record.

    What it redacts, in the message and in each string argument:

    - ``headers``: the value of a ``Name: value`` header line, or a ``(b'name', b'value')`` pair,
      whose name matches (case-insensitively, ignoring ``-``/``_``/``.``, by suffix, as
      ``ConnectionLogger`` matches names); by default ``DEFAULT_REDACT_HEADERS``, which covers
      ``Authorization``, ``Cookie`` and ``Sec-WebSocket-Protocol``;
    - ``query``: the value of ``name=value`` whose percent-decoded name matches the same way
      (query strings, logfmt); by default ``DEFAULT_REDACT_KEYS`` (``token``, ``password``, ...);
    - ``cookies``: the value of ``name=value`` for these exact cookie names;
    - ``subprotocol_prefixes``: whatever follows one of these prefixes (``bearer.`` turns
      ``bearer.abc`` into ``bearer.[redacted]``), wherever it occurs.

    Every non-printable character (CR, LF, ESC, other C0 and C1 controls, U+2028, bidi controls)
    is escaped (``\\n``, ``\\x1b``, ``\\u2028``), so a client cannot forge a line or drive a
    terminal through a close reason or a header. Backslashes are left as they are. A traceback
    keeps its line breaks and is redacted too. A record whose arguments do not fit its message is
    replaced by a fixed text rather than shown unredacted.
    """

    def __init__(
        self,
        *,
        headers: Iterable[str] = DEFAULT_REDACT_HEADERS,
        query: Iterable[str] = DEFAULT_REDACT_KEYS,
        cookies: Iterable[str] = (),
        subprotocol_prefixes: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self._headers = Names(headers, "headers")
        self._query = Names(query, "query")
        self._cookies = frozenset(_names(cookies, "cookies"))
        prefixes = _names(subprotocol_prefixes, "subprotocol_prefixes")
        self._prefixes: re.Pattern[str] | None = None
        if prefixes:
            alternatives = "|".join(re.escape(prefix) for prefix in sorted(prefixes, key=len, reverse=True))
            self._prefixes = re.compile(rf"(?<![{_TOKEN_CHARS}])({alternatives})[{_TOKEN_CHARS}]+")

    def redact(self, text: str) -> str:
        """``text`` with every credential this filter knows of replaced by ``"[redacted]"`` (no escaping)."""
        text = self._redact_header_lines(text)
        text = _HEADER_TUPLE.sub(self._header_tuple, text)
        text = self._redact_name_values(text)
        if self._prefixes is not None:
            text = self._prefixes.sub(lambda match: match.group(1) + REDACTED, text)
        return text

    def clean(self, text: str) -> str:
        """``text`` redacted, then with its non-printable characters escaped: what a record may show."""
        return _escape_controls(self.redact(text))

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place; always ``True`` (the record is kept)."""
        try:
            self._clean_record(record)
        except Exception:  # a record that cannot be formatted is not shown rather than shown unredacted
            record.msg, record.args = _UNREADABLE, ()
        return True

    # --- records ----------------------------------------------------------------------------------

    def _clean_record(self, record: logging.LogRecord) -> None:
        args = record.args
        if args:
            # Arguments one by one, so formatters that read them (uvicorn's access formatter) still
            # can; the template is the program's own, so it is only escaped.
            if isinstance(args, Mapping):
                clean = self.clean
                record.args = {key: clean(value) if isinstance(value, str) else value for key, value in args.items()}
            else:
                record.args = tuple(self.clean(arg) if isinstance(arg, str) else arg for arg in args)
            if isinstance(record.msg, str):
                record.msg = _escape_controls(record.msg)
        elif isinstance(record.msg, str):
            record.msg = self.clean(record.msg)
        # What the arguments alone could not show: a header name and its value in two arguments
        # ("%s: %s"), objects whose repr holds a credential, a message that is not a string.
        text = record.getMessage()
        cleaned = self.clean(text)
        if cleaned != text:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            # Formatted here (as logging.Formatter would) so that the traceback is redacted too.
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = _escape_controls_keep_lines(self.redact(record.exc_text))
        if record.stack_info:
            record.stack_info = _escape_controls_keep_lines(self.redact(record.stack_info))

    # --- redaction --------------------------------------------------------------------------------

    def _redact_header_lines(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for match in _HEADER_NAME.finditer(text):
            if self._headers(match.group(1)):
                end = len(text)
                for newline in ("\r", "\n"):
                    found = text.find(newline, match.end())
                    if found != -1:
                        end = min(end, found)
                spans.append((match.end(), end))  # the value, to the end of the line
        return _replace(text, spans)

    def _redact_name_values(self, text: str) -> str:
        spans = [
            match.span(2)
            for match in _NAME_VALUE.finditer(text)
            if match.group(1) in self._cookies or self._query(unquote_plus(match.group(1)))
        ]
        return _replace(text, spans)

    def _header_tuple(self, match: re.Match[str]) -> str:
        if not match.group(3) or not self._headers(match.group(2)):
            return match.group(0)
        quote = match.group(1)
        return f"({quote}{match.group(2)}{quote[-1]}, {quote}{REDACTED}{quote[-1]})"


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span (in order; one inside an earlier one is skipped) replaced by ``"[redacted]"``.

    A span that is empty or already holds ``"[redacted]"`` is left as it is.
    """
    pieces: list[str] = []
    done = 0  # text[:done] is in pieces
    for start, end in spans:
        if start < done or start == end or text.startswith(REDACTED, start):
            continue
        pieces += (text[done:start], REDACTED)
        done = end
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)
