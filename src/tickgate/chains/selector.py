"""Expiry selectors: "next 8 weekly + next 4 quarterly", resolved against the expiries a master lists.

The Tier B universe names expiries by rule, not by date, so it rolls by itself: resolved against the
registry for ``today``, expired contracts drop out and the next ones come in. Exchanges change their
calendars (since Nov 2024 only NIFTY and SENSEX have weeklies), so a selector that finds fewer expiries
than it asks for takes what exists and the :class:`Selection` reports the shortfall.

Grammar (case-insensitive, spaces free)::

    selector := term ("+" term)*
    term     := "next" COUNT CLASS
    COUNT    := a positive integer
    CLASS    := weekly | weeklies | monthly | monthlies | quarterly | quarterlies | expiry | expiries

Classes, on the registry's :class:`~tickgate.instruments.Expiry` (kind from the master's W/M flag):

* **weekly** — a weekly-flagged expiry (``kind == "weekly"``); the monthly expiry of a week is not one.
* **monthly** — a month-end expiry: any expiry not flagged weekly (serial monthly, quarterly or
  half-yearly contract alike).
* **quarterly** — a month-end expiry in March, June, September or December. This is a calendar rule,
  deliberately not the registry's ``kind == "quarterly"`` (quarter months beyond the three serial
  monthlies): "the next four quarterlies" are the next four quarter-end expiries whether or not the
  nearest one is also a serial month, and the answer does not depend on how many serial months an
  exchange happens to list.
* **expiry** — any expiry (e.g. MCX options, which have one series).

Terms are applied left to right and each takes the next ``COUNT`` expiries of its class *not already
taken by an earlier term*: in "next 1 monthly + next 4 quarterly" a quarter-month monthly picked by the
first term is not counted again by the second, which then reaches one quarter further.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tickgate.instruments.model import Expiry

ExpiryClass = Literal["weekly", "monthly", "quarterly", "expiry"]

_CLASS_WORDS: dict[str, ExpiryClass] = {
    "weekly": "weekly",
    "weeklies": "weekly",
    "monthly": "monthly",
    "monthlies": "monthly",
    "quarterly": "quarterly",
    "quarterlies": "quarterly",
    "expiry": "expiry",
    "expiries": "expiry",
}
_QUARTER_MONTHS = frozenset({3, 6, 9, 12})
_TERM = re.compile(r"^next\s+(\S+)\s+(\S+)$", re.IGNORECASE)
MAX_COUNT = 100


class SelectorError(ValueError):
    """A selector string that does not parse; the message quotes it and says what was expected."""


def matches(cls: ExpiryClass, expiry: Expiry) -> bool:
    """Whether ``expiry`` belongs to ``cls`` (see the module docs for the definitions)."""
    if cls == "expiry":
        return True
    if cls == "weekly":
        return expiry.kind == "weekly"
    if expiry.kind == "weekly":
        return False
    return cls == "monthly" or expiry.date.month in _QUARTER_MONTHS


@dataclass(frozen=True, slots=True)
class Term:
    count: int
    cls: ExpiryClass

    def __str__(self) -> str:
        word = "expiries" if self.cls == "expiry" and self.count > 1 else self.cls
        return f"next {self.count} {word}"


@dataclass(frozen=True, slots=True)
class TermResult:
    """What one term asked for and found."""

    term: Term
    found: tuple[Expiry, ...]

    @property
    def shortfall(self) -> int:
        return self.term.count - len(self.found)


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen expiries (ascending) and, per term, what was asked and found."""

    expiries: tuple[Expiry, ...]
    terms: tuple[TermResult, ...]

    @property
    def asked(self) -> int:
        return sum(t.term.count for t in self.terms)

    @property
    def found(self) -> int:
        return len(self.expiries)

    @property
    def shortfall(self) -> int:
        return sum(t.shortfall for t in self.terms)

    def shortfalls(self) -> list[str]:
        """One sentence per short term, e.g. ``"next 4 weekly: found 0 of 4 (no weekly expiries listed)"``."""
        out = []
        earlier = 0
        for t in self.terms:
            if t.shortfall > 0:
                listed = f"only {len(t.found)}" if t.found else "no"
                beyond = " beyond those taken by earlier terms" if earlier else ""
                out.append(
                    f"{t.term}: found {len(t.found)} of {t.term.count} "
                    f"({listed} {t.term.cls} expiries listed{beyond})"
                )
            earlier += len(t.found)
        return out


@dataclass(frozen=True, slots=True)
class ExpirySelector:
    """A parsed selector; :meth:`select` applies it to a registry's upcoming expiries."""

    terms: tuple[Term, ...]

    def __str__(self) -> str:
        return " + ".join(str(t) for t in self.terms)

    @classmethod
    def parse(cls, text: str) -> ExpirySelector:
        """Parse ``"next 8 weekly + next 4 quarterly"``; :class:`SelectorError` says what is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise SelectorError(f"empty expiry selector {text!r}: expected e.g. 'next 1 monthly'")
        terms = []
        parts = text.split("+")
        for n, raw in enumerate(parts, start=1):
            where = f"bad expiry selector {text!r}, term {n} {raw.strip()!r}"
            m = _TERM.match(raw.strip())
            if m is None:
                if not raw.strip():
                    raise SelectorError(f"bad expiry selector {text!r}: term {n} is empty (stray '+')")
                raise SelectorError(f"{where}: expected 'next <count> <weekly|monthly|quarterly|expiry>'")
            count_text, word = m.groups()
            if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_COUNT:
                raise SelectorError(f"{where}: count must be an integer from 1 to {MAX_COUNT}")
            kind = _CLASS_WORDS.get(word.lower())
            if kind is None:
                known = ", ".join(sorted(set(_CLASS_WORDS.values())))
                raise SelectorError(f"{where}: unknown expiry class {word!r}; use one of {known}")
            terms.append(Term(int(count_text), kind))
        return cls(tuple(terms))

    def select(self, expiries: Sequence[Expiry]) -> Selection:
        """Apply the terms, left to right, to ``expiries`` (upcoming ones, any order)."""
        ordered = sorted(expiries, key=lambda e: e.date)
        taken: set[Expiry] = set()
        results = []
        for term in self.terms:
            found: list[Expiry] = []
            for e in ordered:
                if len(found) == term.count:
                    break
                if e not in taken and matches(term.cls, e):
                    found.append(e)
                    taken.add(e)
            results.append(TermResult(term, tuple(found)))
        return Selection(tuple(e for e in ordered if e in taken), tuple(results))
