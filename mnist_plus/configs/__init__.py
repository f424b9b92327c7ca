"""Named configs and config files: where a run's fields come from before its flags.

A named config is a module here whose `get_config()` returns the fields that differ from
`Config`'s defaults (as big_vision's configs do); its docstring opens with its command and
states its measured result. Every CLI takes `--preset NAME` and `--config FILE` alike: the
preset's fields first, the file's over them, the command line's flags last.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import os
import runpy
from typing import Any, Mapping

from mnist_plus import config as config_lib
from mnist_plus.errors import UsageError

NAMES = ("default", "lean", "fast", "conv_stem", "late_wide", "wider", "accurate", "writeup",
         "speedrun", "robust", "robust_light")


def preset_fields(name: str) -> dict[str, Any]:
    """The fields named config `name` sets, checked as a config file's are."""
    if name not in NAMES:
        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(NAMES)}"
        raise UsageError(f"--preset {name!r} is unknown ({hint})")
    module = importlib.import_module(f"{__name__}.{name}")
    return _checked(module.__file__, _as_mapping(module.__file__, module.get_config()))


def get(name: str, **fields: Any) -> config_lib.Config:
    """The Config of named config `name` with `fields` over it (a field given wins)."""
    return config_lib.Config(**{**preset_fields(name), **fields})


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _checked_value(path: str, name: str, value: Any) -> Any:
    """`value` for field `name` if it has the field's type (an int is a valid float)."""
    kind = {f.name: f.type for f in dataclasses.fields(config_lib.Config)}[name]
    kind = getattr(kind, "__name__", kind)
    ok = {"bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "str": isinstance(value, str)}[kind]
    if not ok:
        raise UsageError(f"config file {path}: {name} must be {_KINDS[kind]}, not {value!r} "
                         f"({type(value).__name__})")
    return float(value) if kind == "float" else value


def _as_mapping(path: str, config: Any) -> dict[str, Any]:
    """The fields of what `get_config()` returned: a mapping, anything with keys() and
    [] (an ml_collections ConfigDict), or an object whose attributes are the fields."""
    if isinstance(config, Mapping):
        return dict(config)
    if callable(getattr(config, "keys", None)) and hasattr(config, "__getitem__"):
        return {k: config[k] for k in config.keys()}
    try:
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    except TypeError:  # no __dict__ (slots): read the fields it has
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config_lib.Config)
                if hasattr(config, f.name)}


def _read_python(path: str) -> Any:
    try:
        namespace = runpy.run_path(path)
    except OSError as e:
        raise UsageError(f"cannot read config file {path} ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - the user's code: report it in one line
        raise UsageError(f"config file {path} failed to run ({type(e).__name__}: {e})") from None
    get_config = namespace.get("get_config")
    if not callable(get_config):
        raise UsageError(f"config file {path} defines no get_config(): define one that "
                         f"returns a dict (or an object) of Config fields")
    try:
        return get_config()
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"config file {path}: get_config() failed ({type(e).__name__}: "
                         f"{e})") from None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read config file {path} ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} is not valid JSON ({e})") from None


def load_file(path: str) -> dict[str, Any]:
    """The Config fields set by a config file (`--config`), checked: a JSON object, or a
    Python file whose `get_config()` returns a mapping or an object of fields (as in the
    Flax examples). Values are checked for type here and for range by `validate`."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".py":
        raw = _read_python(path)
    elif ext == ".json":
        raw = _read_json(path)
    else:
        raise UsageError(f"config file {path}: use a .json file (an object of Config fields) "
                         f"or a .py file with a get_config() function")
    if ext == ".json" and not isinstance(raw, dict):
        raise UsageError(f"config file {path} must hold a JSON object of Config fields, "
                         f"not a {type(raw).__name__}")
    return _checked(path, _as_mapping(path, raw))


def _checked(path: str, values: dict[str, Any]) -> dict[str, Any]:
    known = [f.name for f in dataclasses.fields(config_lib.Config)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see --help for the fields"
            raise UsageError(f"config file {path}: unknown key {key!r} ({hint})")
    return {k: _checked_value(path, k, v) for k, v in values.items()}
