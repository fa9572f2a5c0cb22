"""Name -> factory registries, so adding a method or an architecture touches one file.

Besides exact names, a registry can hold *patterns* (a regular expression and a label such
as ``bert_L<layers>_H<hidden>``) whose maker builds the entry from the match: families
with open-ended members (a BERT of any depth and width, any Hugging Face checkpoint) need
no list of every member. Patterns are tried in registration order after the exact names.
"""
from __future__ import annotations

import re
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised for a name no one registered; the message lists what is allowed."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, check: Callable[[str, T, dict[str, T]], None] | None = None):
        """``check(name, entry, registered)`` may refuse an entry before it is added (it raises)."""
        self.kind = kind
        self._check = check
        self._entries: dict[str, T] = {}
        self._patterns: list[tuple[re.Pattern, str, Callable[[re.Match], T]]] = []

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self._check is not None:
                self._check(name, obj, dict(self._entries))
            self._entries[name] = obj
            return obj

        return decorator

    def register_pattern(self, regex: str, label: str) -> Callable[[Callable[[re.Match], T]], Callable]:
        """``maker(match) -> entry`` for every name that fully matches ``regex``."""
        def decorator(maker: Callable[[re.Match], T]) -> Callable[[re.Match], T]:
            self._patterns.append((re.compile(regex), label, maker))
            return maker

        return decorator

    def get(self, name: str, field: str | None = None) -> T:
        if name in self._entries:
            return self._entries[name]
        for regex, _, maker in self._patterns:
            match = regex.fullmatch(name) if isinstance(name, str) else None
            if match:
                return maker(match)
        label = field or self.kind
        raise UnknownNameError(
            f"{label}: unknown {self.kind} {name!r}; allowed: {', '.join(self.names() + self.pattern_labels())}"
        )

    def names(self) -> list[str]:
        """The exact names (patterns excluded: they name families, not members)."""
        return sorted(self._entries)

    def pattern_labels(self) -> list[str]:
        return [label for _, label, _ in self._patterns]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or any(
            isinstance(name, str) and regex.fullmatch(name) for regex, _, _ in self._patterns)
