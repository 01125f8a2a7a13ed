"""Checking a config's values up front, with one message per value that says what is allowed.

A config is a dataclass; each field has a type hint and, optionally, a `Rule` (bounds or choices) registered in
`RULES` under its class. `check_fields` walks the fields: a value of the wrong type raises `TypeError`, one out of
range (NaN and inf included) `ValueError`, and the message names the field, its command-line flag and what is
allowed::

    ppo.max_steps must be an integer >= 1, got 0 (flag --ppo.max-steps).

`rlhf_helpers.config` registers the course's rules; checks that involve several fields live in the configs'
own ``validate`` methods.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Union

from .errors import BadTypeError, BadValueError



@dataclass(frozen=True)
class Rule:
    """What one field allows, besides its type: bounds (closed unless ``*_open``) or a set of choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    text: str | None = None  # how to say what is allowed, where the bounds alone do not say it

    def allows(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, numbers.Real):
            if self.low is not None and (value <= self.low if self.low_open else value < self.low):
                return False
            if self.high is not None and (value >= self.high if self.high_open else value > self.high):
                return False
        return True

    def describe(self) -> str:
        def num(x) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.text:
            return self.text
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {num(self.high)}"
        return ""


def at_least(low, *, open: bool = False) -> Rule:
    return Rule(low=low, low_open=open)


def between(low, high, *, low_open: bool = False, high_open: bool = False) -> Rule:
    return Rule(low=low, high=high, low_open=low_open, high_open=high_open)


def one_of(*choices) -> Rule:
    return Rule(choices=choices)


POSITIVE = at_least(0, open=True)
NON_NEGATIVE = at_least(0)
AT_LEAST_ONE = at_least(1)
UNIT_INTERVAL = between(0, 1)

# Rules by class and field name; a subclass inherits its bases' rules (looked up along the MRO).
RULES: dict[type, dict[str, Rule]] = {}


def _strip_annotated(hint):
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _split_optional(hint) -> tuple[object, bool]:
    """(the type without None, whether None is allowed)."""
    hint = _strip_annotated(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(hint))
    return hint, False


def _type_text(base) -> str:
    if base is int:
        return "an integer"
    if base is float:
        return "a finite number"
    if base is bool:
        return "True or False"
    if base is str:
        return "a string"
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {'strings' if args[0] is str else 'numbers'}"
        return "a pair of numbers" if len(args) == 2 else "a tuple of numbers"
    return f"a {getattr(base, '__name__', base)}"


def _has_type(value, base) -> bool:
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if base is str:
        return isinstance(value, str)
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
            return isinstance(value, (tuple, list)) and all(_has_type(v, args[0]) for v in value)
        return (isinstance(value, (tuple, list)) and len(value) == len(args)
                and all(_has_type(v, a) for v, a in zip(value, args)))
    if dataclasses.is_dataclass(base):
        return isinstance(value, base)
    return True


def flag_name(prefix: str, name: str) -> str:
    """The command-line flag of a config field: ``flag_name("ppo.", "max_steps") == "--ppo.max-steps"`` (the one
    place flags are spelled; the stage seeds are set by the course's --seed, the profile's name by --profile)."""
    if name == "seed" or (not prefix and name == "name"):
        return "--seed" if name == "seed" else "--profile"
    return f"--{prefix}{name.replace('_', '-')}"


def describe_value(value) -> str:
    if value is None or isinstance(value, (bool, numbers.Number)):
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def _allowed_text(base, rule: Rule | None, optional: bool) -> str:
    """What a field allows, in words: "an integer >= 1", "a finite number in (0, 1] or None", "one of 'k1', 'k3'"."""
    if rule is not None and (rule.text or rule.choices is not None):
        text = rule.describe()
    elif rule is not None:
        text = _type_text(base) + (", each " if typing.get_origin(base) is tuple else " ") + rule.describe()
    else:
        text = _type_text(base)
    return text + (" or None" if optional else "")


def check_fields(obj, prefix: str = "") -> None:
    """Check every field of the dataclass `obj` against its type and its rule (`RULES`).

    A value of the wrong type raises `TypeError`, a value out of range (NaN and inf included) `ValueError`;
    each message names the field (``ppo.max_steps``), its flag (``--ppo.max-steps``) and what is allowed.
    Fields that are themselves configs are only type-checked here (their own ``validate`` checks them).
    """
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        base, optional = _split_optional(hints[f.name])
        where = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(base):
            if not isinstance(value, base):
                raise BadTypeError(f"{where} must be a {base.__name__}, got {describe_value(value)}.")
            continue
        if value is None and optional:
            continue
        rule = next((RULES[c][f.name] for c in type(obj).__mro__ if f.name in RULES.get(c, {})), None)
        message = (f"{where} must be {_allowed_text(base, rule, optional)}, got {describe_value(value)} "
                   f"(flag {flag_name(prefix, f.name)}).")
        if not _has_type(value, base):
            is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            # NaN and inf are numbers of a value that is not allowed; a str or a float for an int: wrong type
            raise (BadValueError if base is float and is_number else BadTypeError)(message)
        values = value if typing.get_origin(base) is tuple else (value,)
        if rule is not None and not all(rule.allows(v) for v in values):
            raise BadValueError(message)


def check_positive_int(value, name: str, flag: str) -> int:
    """`value` as an int if it is an integer >= 1; else TypeError / ValueError naming `name` and its `flag`."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < 1:
        raise (BadValueError if is_int else BadTypeError)(
            f"{name} must be an integer >= 1, got {describe_value(value)} (flag {flag}).")
    return int(value)
