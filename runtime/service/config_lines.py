"""Where a key is in a TOML file: tomllib gives values, not positions, so a config error's line comes from this small
scanner. It knows tables (``[a.b]``, ``[[a]]``, quoted and dotted names), keys, and enough of values (strings,
multi-line strings and arrays, inline tables) not to mistake what is inside them for a key; on anything it does not
understand it finds no line rather than a wrong one, and never raises."""

from __future__ import annotations

import json
import re

__all__ = ["KeyLines", "Where"]

Where = tuple[str, ...]  # a table's path in the file: () is the top level, ("sources", "door") is [sources.door]


class KeyLines:
    """Where each table header and key of a TOML file is: tomllib keeps no positions, and an error without its line
    sends the operator hunting through the file. A small scanner, not a parser (the file already parsed): it
    follows headers (dotted, quoted), keys (dotted, quoted) and skips values, multi-line strings and arrays
    included. The first line of each path wins; what it does not understand it skips."""

    _PART = r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'"""
    _KEY = re.compile(rf"[ \t]*((?:{_PART})(?:[ \t]*\.[ \t]*(?:{_PART}))*)[ \t]*")
    _STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')

    def __init__(self, text: str):
        self.headers: dict[Where, int] = {}
        self.first: dict[Where, int] = {}  # every path and its prefixes, from headers and keys
        table: Where = ()
        state: tuple[str | None, int] = (None, 0)  # an open multi-line string's quotes; open brackets
        for number, line in enumerate(text.split("\n"), 1):
            if state != (None, 0):
                state = self._value(line, 0, *state)
                continue
            start = len(line) - len(line.lstrip(" \t"))
            if line.startswith("[", start):
                key = self._key(line, start + (2 if line.startswith("[[", start) else 1))
                if key and line.startswith("]", key[1]):
                    table = key[0]
                    self.headers.setdefault(table, number)
                    self._seen(table, number)
                continue
            key = self._key(line, start)
            if key and line.startswith("=", key[1]):
                self._seen(table + key[0], number)
                state = self._value(line, key[1] + 1, None, 0)

    def _seen(self, path: Where, number: int) -> None:
        for end in range(1, len(path) + 1):
            self.first.setdefault(path[:end], number)

    @classmethod
    def _key(cls, line: str, pos: int) -> tuple[Where, int] | None:
        match = cls._KEY.match(line, pos)
        if not match:
            return None
        parts = re.findall(cls._PART, match[1])
        return tuple(cls._unquote(p) for p in parts), match.end()

    @staticmethod
    def _unquote(part: str) -> str:
        if part[0] == "'":
            return part[1:-1]
        try:
            return json.loads(part) if part[0] == '"' else part
        except ValueError:  # a TOML escape JSON lacks (\U0001F600, \e): close enough for finding a line
            return part[1:-1]

    @classmethod
    def _value(cls, line: str, i: int, quotes: str | None, depth: int) -> tuple[str | None, int]:
        while i < len(line):
            if quotes:
                if quotes == '"""' and line[i] == "\\":
                    i += 2
                elif line.startswith(quotes, i):
                    quotes, i = None, i + 3
                else:
                    i += 1
                continue
            if line[i] == "#":
                break
            if line.startswith(('"""', "'''"), i):
                quotes, i = line[i:i + 3], i + 3
                continue
            string = cls._STRING.match(line, i)
            if string:
                i = string.end()
                continue
            depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(line[i], 0)
            i += 1
        return quotes, max(depth, 0)

    def line(self, where: Where, key: str | None) -> int | None:
        """The key's line, else its table's header, else where the table first shows up, else None."""
        found = self.first.get((*where, key)) if key else None
        return found or self.headers.get(where) or self.first.get(where)
