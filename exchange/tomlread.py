"""A strict, typed reader over one parsed TOML table that collects problems instead of raising.

Rules:

1. Every problem names the file and the dotted key path, says what was expected and what was
   found, and is collected in a shared list, so the loader reports all problems at once.
2. A getter that finds a problem returns ``None``; callers build objects only when the list of
   problems is empty, so a half-valid config is never used.
3. ``done()`` refuses keys nobody asked for: a misspelled key is an error, never ignored.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_TYPE_WORDS = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
    float: "a number",
}


def _found(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"{value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dt.datetime):
        return "a date-time"
    if isinstance(value, dt.date):
        return "a date"
    return repr(value)


class Problems:
    """The shared list of problems for one load."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


class Table:
    """A view of one TOML table at a key path in a file."""

    def __init__(self, data: dict[str, Any], file: str, path: str, problems: Problems) -> None:
        self._data = data
        self._file = file
        self._path = path
        self._problems = problems
        self._seen: set[str] = set()

    def where(self, key: str | None = None) -> str:
        parts = [p for p in (self._path, key) if p]
        return f"{self._file}: {'.'.join(parts)}" if parts else self._file

    def problem(self, key: str | None, message: str) -> None:
        self._problems.add(self.where(key), message)

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str, kind: type[T], required: bool) -> T | None:
        self._seen.add(key)
        if key not in self._data:
            if required:
                self.problem(key, f"missing; expected {_TYPE_WORDS.get(kind, kind.__name__)}")
            return None
        value = self._data[key]
        # bool is an int in Python; TOML keeps them apart and so do we.
        wrong_bool = isinstance(value, bool) and kind is not bool
        if not isinstance(value, kind) or wrong_bool:
            self.problem(
                key, f"expected {_TYPE_WORDS.get(kind, kind.__name__)}, got {_found(value)}"
            )
            return None
        return value

    def string(self, key: str, *, required: bool = True, non_empty: bool = True) -> str | None:
        value = self._get(key, str, required)
        if value is not None and non_empty and not value.strip():
            self.problem(key, "must not be empty")
            return None
        return value

    def integer(self, key: str, *, required: bool = True, minimum: int | None = None) -> int | None:
        value = self._get(key, int, required)
        if value is not None and minimum is not None and value < minimum:
            self.problem(key, f"expected a whole number of at least {minimum}, got {value}")
            return None
        return value

    def boolean(self, key: str, *, default: bool) -> bool | None:
        value = self._get(key, bool, False)
        return default if value is None and key not in self._data else value

    def date(self, key: str, *, required: bool = True) -> dt.date | None:
        self._seen.add(key)
        if key not in self._data:
            if required:
                self.problem(key, "missing; expected a date like 2026-04-01")
            return None
        value = self._data[key]
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            self.problem(key, f"expected a date like 2026-04-01 (no quotes), got {_found(value)}")
            return None
        return value

    def strings(
        self, key: str, *, required: bool = True, non_empty: bool = True
    ) -> list[str] | None:
        value = self._get(key, list, required)
        if value is None:
            return None
        if non_empty and not value:
            self.problem(key, "expected a non-empty list of strings, got an empty list")
            return None
        bad = [i for i, item in enumerate(value) if not isinstance(item, str) or not item.strip()]
        if bad:
            self.problem(
                f"{key}[{bad[0]}]", f"expected a non-empty string, got {_found(value[bad[0]])}"
            )
            return None
        return list(value)

    def table(self, key: str, *, required: bool = True) -> Table | None:
        value = self._get(key, dict, required)
        if value is None:
            return None
        path = f"{self._path}.{key}" if self._path else key
        return Table(value, self._file, path, self._problems)

    def tables(self, key: str) -> list[Table]:
        """An optional array of tables."""
        value = self._get(key, list, False)
        if value is None:
            return []
        result = []
        for index, item in enumerate(value):
            path = f"{self._path}.{key}[{index}]" if self._path else f"{key}[{index}]"
            if not isinstance(item, dict):
                self.problem(f"{key}[{index}]", f"expected a table, got {_found(item)}")
                continue
            result.append(Table(item, self._file, path, self._problems))
        return result

    def parsed(self, key: str, parse: Callable[[str], T], *, required: bool = True) -> T | None:
        """A string turned into a value by ``parse``, whose ValueError message is the problem."""
        text = self.string(key, required=required)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as error:
            self.problem(key, str(error))
            return None

    def one_of(
        self, key: str, choices: tuple[str, ...], *, default: str | None = None
    ) -> str | None:
        text = self.string(key, required=default is None)
        if text is None:
            return default if key not in self._data else None
        if text not in choices:
            self.problem(key, f"expected one of {', '.join(choices)}; got {text!r}")
            return None
        return text

    def done(self) -> None:
        """Report keys that nobody read: unknown or misspelled."""
        for key in sorted(set(self._data) - self._seen):
            close = difflib.get_close_matches(key, sorted(self._seen), n=1)
            if close:
                self.problem(key, f"unknown key; did you mean {close[0]!r}?")
            else:
                known = ", ".join(sorted(self._seen)) or "none"
                self.problem(key, f"unknown key; expected one of: {known}")
