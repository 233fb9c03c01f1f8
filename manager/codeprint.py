"""A fingerprint of a custom loader's code, for the export stamp: a lab changes its preprocessing by
editing its loader, and the export made by the old code must then be redone.

What counts: the function's bytecode, constants and names (nested functions and lambdas included),
the simple values (numbers, text, tuples of them) of its default arguments and of what it reads from
its module's globals or its closure, and the functions it calls, followed the same way: those of its
own module, and those of the lab's other modules (`from preprocess import smooth`, or
`preprocess.smooth(...)`) — code that is not installed (outside the standard library and
site-packages, and not this package's); for a class, its methods and simple class attributes. Line
numbers and the file name do not count, so moving the function in its file or adding code above it
changes nothing. Installed libraries (their changes come with their versions), and values of other
types (arrays, dicts), are not followed: their change goes unnoticed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import site
import sys
import sysconfig
import types
from typing import Any

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
# Bump when the rules change what a fingerprint covers (stamps made by other rules are not compared).
# 2: helpers in the lab's other modules are followed.
RULES = 2


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
        elif _followed(value, function):
            _collect(value, parts, seen, stop_at)
        elif isinstance(value, types.ModuleType) and _labs_own(value):
            # `module.helper(...)`: the helper's name is among the code's names, like the module's.
            for attribute in names:
                member = getattr(value, attribute, None)
                if _simple(member) and hasattr(value, attribute):
                    parts.append(f"{name}.{attribute}={_stable_repr(member)}")
                elif _followed(member, function):
                    _collect(member, parts, seen, stop_at)
    for cell in function.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if _simple(value):
            parts.append(_stable_repr(value))
        elif isinstance(value, types.FunctionType):
            _collect(value, parts, seen, stop_at)


@functools.cache
def _installed_folders() -> tuple[str, ...]:
    """Where installed code lives: the standard library, site-packages, and this package's folders."""
    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    folders |= set(site.getsitepackages()) | {site.getusersitepackages()}
    this_distribution = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders |= {os.path.join(this_distribution, package) for package in ("manager", "runqueue", "lfads")}
    return tuple(os.path.join(os.path.realpath(folder), "") for folder in folders if folder)


def _followed(value: Any, caller: types.FunctionType) -> bool:
    """A function or class whose code counts for `caller`: from its module, or from the lab's own."""
    if isinstance(value, types.FunctionType):
        return value.__module__ == caller.__module__ or _labs_own(value)
    return isinstance(value, type) and _labs_own(value)


def _labs_own(thing: types.FunctionType | type | types.ModuleType) -> bool:
    """Code of the lab's own modules: a Python file that is not installed (see _installed_folders)."""
    if isinstance(thing, types.FunctionType):
        filename = thing.__code__.co_filename
    elif isinstance(thing, types.ModuleType):
        filename = getattr(thing, "__file__", None) or ""
    else:
        filename = getattr(sys.modules.get(thing.__module__), "__file__", None) or ""
    if not filename.endswith(".py"):
        return False  # built-in, frozen or compiled (an extension module): not source a lab edits
    real = os.path.realpath(filename)
    return not real.startswith(_installed_folders())


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
