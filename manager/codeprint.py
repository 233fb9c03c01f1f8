"""A fingerprint of a custom loader's code, for the export stamp: a lab changes its preprocessing by
editing its loader, and the export made by the old code must then be redone.

What counts: the function's bytecode, constants and names (nested functions and lambdas included),
the simple values (numbers, text, tuples of them) of its default arguments and of what it reads from
its module's globals or its closure, and the functions of the same module it calls, followed the same
way; for a class, its methods and simple class attributes. Line numbers and the file name
do not count, so moving the function in its file or adding code above it changes nothing. Helpers from
other modules, and values of other types (arrays, dicts), are not followed: their change goes unnoticed.
"""

from __future__ import annotations

import functools
import hashlib
import types
from typing import Any

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))


def code_fingerprint(thing: Any, stop_at: type | None = None) -> str:
    """16 hex digits over the code of a function, partial, callable object or class (its methods
    and those of its bases up to, not including, `stop_at`); "" when there is no Python code."""
    parts: list[str] = []
    _collect(thing, parts, set(), stop_at)
    if not parts:
        return ""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _collect(thing: Any, parts: list[str], seen: set[int], stop_at: type | None) -> None:
    if id(thing) in seen:
        return
    seen.add(id(thing))
    if isinstance(thing, functools.partial):
        _collect(thing.func, parts, seen, stop_at)
    elif isinstance(thing, staticmethod | classmethod | types.MethodType):
        _collect(thing.__func__, parts, seen, stop_at)
    elif isinstance(thing, types.FunctionType):
        _function(thing, parts, seen, stop_at)
    elif isinstance(thing, type):
        inherited = set(stop_at.__mro__ if stop_at is not None else (object,))
        for klass in thing.__mro__:
            if klass in inherited:  # the library's own code: its changes come with a new EXPORT_FORMAT
                continue
            for name in sorted(vars(klass)):
                member = vars(klass)[name]
                if isinstance(member, types.FunctionType | staticmethod | classmethod | property):
                    parts.append(f"{klass.__qualname__}.{name}")
                    _collect(member.fget if isinstance(member, property) else member, parts, seen, stop_at)
                elif _simple(member) and not name.startswith("__"):  # a class setting (WINDOW_BINS = 40)
                    parts.append(f"{klass.__qualname__}.{name}={_stable_repr(member)}")
    elif callable(thing) and not isinstance(thing, types.BuiltinFunctionType):
        _collect(type(thing), parts, seen, stop_at)  # a callable object: its class's methods


def _function(function: types.FunctionType, parts: list[str], seen: set[int], stop_at: type | None) -> None:
    parts.append(_code_text(function.__code__))
    defaults = (*(function.__defaults__ or ()), *sorted((function.__kwdefaults__ or {}).items()))
    parts.append(_stable_repr(tuple(value if _simple(value) else type(value).__name__ for value in defaults)))
    names = sorted(_global_names(function.__code__))
    for name in names:
        if name not in function.__globals__:
            continue
        value = function.__globals__[name]
        if _simple(value):
            parts.append(f"{name}={_stable_repr(value)}")
        elif isinstance(value, types.FunctionType) and value.__module__ == function.__module__:
            _collect(value, parts, seen, stop_at)
    for cell in function.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if _simple(value):
            parts.append(_stable_repr(value))
        elif isinstance(value, types.FunctionType):
            _collect(value, parts, seen, stop_at)


def _stable_repr(value: Any) -> str:
    """repr, with sets sorted: their order follows string hashes, which differ from process to process."""
    if isinstance(value, frozenset | set):
        return f"{type(value).__name__}({sorted(_stable_repr(item) for item in value)})"
    if isinstance(value, tuple):
        return "(" + ", ".join(_stable_repr(item) for item in value) + ",)"
    return repr(value)


def _simple(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):
        return all(_simple(item) for item in value)
    return isinstance(value, _SIMPLE)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _code_text(code: types.CodeType) -> str:
    """The code without its position (file, line numbers): what it does, nested code included."""
    consts = [_code_text(c) if isinstance(c, types.CodeType) else _stable_repr(c) for c in code.co_consts]
    return repr((code.co_code.hex(), consts, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                 code.co_argcount, code.co_kwonlyargcount))
