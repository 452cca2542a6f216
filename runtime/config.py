"""One path from YAML presets, `--set KEY=VALUE` and flags to a config dataclass.

Every job's config (PPO, SFT, eval, experiment) is a frozen dataclass whose fields carry
their docs as the string under them. This module turns a preset (a name under the job's
preset directory, or a YAML file) plus overrides into that dataclass, typed and checked,
and builds `--help` text that lists every field with the value the chosen preset gives it:

    config = load_dataclass(PPOConfig, "tiny-cpu", parse_set(["actor_lr=1e-5"]), preset_dir=CONFIG_DIR)

Values are coerced to each field's annotation (YAML reads `1e-6` as a string, a list where a
tuple is wanted, ...); an unknown field is an error that names where it came from.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from countdown_env.errors import UsageError

T = TypeVar("T")

OVERRIDES = "the overrides"


# ---- presets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shelf:
    """Where the presets of one kind live: folders searched in order, and a name prefix.

    Run presets carry their kind in their name (`ppo-tiny-cpu`, `sft-tiny-cpu`; experiment presets
    have none), so no name means two things; a name without the prefix (`tiny-cpu`, the old
    spelling) still finds `<prefix>-tiny-cpu` and prints a one-line deprecation note."""

    folders: tuple[Path, ...]
    prefix: str = ""
    """`ppo`, `sft`, or "" for experiment presets (which then exclude every prefixed file)."""


#: Prefixes that mark a run preset's kind; a folder may hold presets of several kinds.
KIND_PREFIXES = ("ppo", "sft")


def _shelf(preset_dir: Path | Shelf | None) -> Shelf:
    if isinstance(preset_dir, Shelf):
        return preset_dir
    return Shelf(() if preset_dir is None else (Path(preset_dir),))


def preset_names(preset_dir: Path | Shelf | None) -> list[str]:
    """The preset names on a shelf (or in a directory: `<name>.yaml`)."""
    shelf = _shelf(preset_dir)
    names = {p.stem for folder in shelf.folders for p in folder.glob("*.yaml")}
    if shelf.prefix:
        return sorted(n for n in names if n.startswith(f"{shelf.prefix}-"))
    if isinstance(preset_dir, Shelf):
        return sorted(n for n in names if not n.startswith(tuple(f"{k}-" for k in KIND_PREFIXES)))
    return sorted(names)


def resolve_source(source: str | Path, preset_dir: Path | Shelf | None, *, what: str = "config") -> Path:
    """A YAML file given by path, or by preset name on the shelf (an old unprefixed name with a note)."""
    path = Path(source)
    if path.is_file():
        return path
    shelf = _shelf(preset_dir)
    names = preset_names(shelf)
    for name in (str(source), f"{shelf.prefix}-{source}" if shelf.prefix else None):
        if name in names:
            found = next(folder / f"{name}.yaml" for folder in shelf.folders if (folder / f"{name}.yaml").is_file())
            if name != str(source):
                print(f"note: {what} preset {str(source)!r} is now called {name!r}; the old name will go", file=sys.stderr)
            return found
    raise UsageError(f"unknown {what} preset {str(source)!r}: not a file, and the presets are {names}")


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping (an empty or comment-only file is an empty mapping)."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a config file must be a mapping of field: value, got {type(values).__name__}")
    return values


# ---- values -------------------------------------------------------------------------


def resolve_values(
    cls: type, source: str | Path | None = None, overrides: Mapping[str, Any] | None = None, preset_dir: Path | Shelf | None = None,
    *, what: str = "config",
) -> dict[str, Any]:  # fmt: skip
    """The typed field values a preset (or file) and overrides set, without the dataclass defaults.

    Raises UsageError (a ValueError) on an unknown field (naming the file or the overrides it came from) or a
    value that does not fit its field's type.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if source is not None and str(source) != "":
        path = resolve_source(source, preset_dir, what=what)
        layers.append((str(path), read_mapping(path)))
    if overrides:
        layers.append((OVERRIDES, overrides))
    hints = _type_hints(cls)
    values: dict[str, Any] = {}
    for origin, layer in layers:
        unknown = sorted(set(layer) - set(hints))
        if unknown:
            raise UsageError(f"unknown {what} field(s) {unknown} in {origin}; known fields: {sorted(hints)}")
        for name, value in layer.items():
            values[name] = coerce(name, value, hints[name], origin=origin)
    return values


def load_dataclass(
    cls: type[T], source: str | Path | None = None, overrides: Mapping[str, Any] | None = None, preset_dir: Path | Shelf | None = None,
    *, what: str = "config",
) -> T:  # fmt: skip
    """`cls` from a preset name (under `preset_dir`) or YAML path, then `overrides`, each value typed by its field.

    Every mistake in those values (a bad preset, field, type, or one the dataclass's checks reject) is a
    `UsageError`, which the CLI prints as one line."""
    values = resolve_values(cls, source, overrides, preset_dir, what=what)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in values and _no_default(f)]
    if missing:
        raise UsageError(f"{what} needs {missing} (set by flags, --set or the YAML file)")
    try:
        return cls(**values)
    except UsageError:
        raise
    except ValueError as err:  # the dataclass's own checks reject a value the user set
        raise UsageError(str(err)) from err


def defaults(
    cls: type, source: str | Path | None = None, preset_dir: Path | Shelf | None = None, *, what: str = "config"
) -> dict[str, Any]:
    """Every field's value under a preset: the preset's value, else the dataclass default (required fields left out)."""
    out = {f.name: _default(f) for f in dataclasses.fields(cls) if not _no_default(f)}
    out.update(resolve_values(cls, source, None, preset_dir, what=what))
    return out


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """`["key=value", ...]` -> dict, each value parsed as YAML (`3e-5`, `true`, `null`, `[1, 2]`, `{a: 1}`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UsageError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    return out


def coerce(name: str, value: Any, annotation: Any, *, origin: str | None = None) -> Any:
    """`value` as the type `annotation` names: int, float, bool, str, Path, tuple/list, dict, Optional,
    Literal, or a nested dataclass (from a mapping). Raises UsageError (a ValueError) saying which field and where."""
    try:
        return _coerce(value, annotation)
    except (TypeError, ValueError) as err:
        where = f" (in {origin})" if origin else ""
        detail = f": {err}" if isinstance(err, _Mismatch) else ""
        raise UsageError(f"{name} must be of type {_type_name(annotation)}, got {value!r}{where}{detail}") from None


class _Mismatch(ValueError):
    """A coercion failure whose message is worth showing (unlike int("many")'s)."""


def _coerce(value: Any, annotation: Any) -> Any:
    """`value` as `annotation`; TypeError or ValueError (a `_Mismatch` when the reason is worth showing) if it cannot be."""
    if annotation is Any or annotation is typing.Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(annotation))
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise _Mismatch(f"choose one of {list(typing.get_args(annotation))}")
        return value
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, typing.get_args(annotation))
    if origin is dict or annotation is dict:
        return _coerce_dict(value, typing.get_args(annotation))
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _coerce_dataclass(value, annotation)
    if value is None:
        raise TypeError
    return _coerce_scalar(value, annotation)


def _coerce_union(value: Any, args: tuple[Any, ...]) -> Any:
    """`value` as the first option of a union (or Optional) it fits exactly, else the first it coerces to."""
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for option in options:  # an exact fit first, so `int | str` keeps 3 an int
        if _fits(value, option):
            return value
    for option in options:
        try:
            return _coerce(value, option)
        except (TypeError, ValueError):
            continue
    raise TypeError


def _coerce_sequence(value: Any, origin: type, args: tuple[Any, ...]) -> Any:
    """A list, a variadic tuple (``tuple[int, ...]``) or a fixed-length tuple, item by item."""
    items = list(value) if isinstance(value, list | tuple) else [value]  # a scalar is a one-item sequence: --set seeds=3
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise _Mismatch(f"expected {len(args)} items")
        return tuple(_coerce(v, a) for v, a in zip(items, args, strict=True))
    item_type = args[0] if args else Any
    return origin(_coerce(v, item_type) for v in items)


def _coerce_dict(value: Any, args: tuple[Any, ...]) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError
    if len(args) == 2:
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    return dict(value)


def _coerce_dataclass(value: Any, annotation: type) -> Any:
    """A nested config: kept if it already is one, else built (and checked) from a mapping."""
    if isinstance(value, annotation):
        return value
    if not isinstance(value, Mapping):
        raise TypeError
    try:
        return load_dataclass(annotation, None, value, what=annotation.__name__)
    except (TypeError, ValueError) as err:
        raise _Mismatch(str(err)) from None


def _coerce_scalar(value: Any, annotation: Any) -> Any:
    """bool, int, float, str, or a type built from a string (Path, ...); a bool is never taken for a number."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError
    if annotation in (int, float) and isinstance(value, bool):
        raise TypeError
    if annotation is int:
        if isinstance(value, float) and not value.is_integer():
            raise TypeError
        return int(value)
    if annotation is float:
        return float(value)  # YAML 1.1 reads 1e-6 (no dot) as a string
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. a model name or tag that YAML read as a number
        raise TypeError
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if isinstance(value, str):
            return annotation(value)  # Path and other types built from a string
        raise TypeError
    return value  # an annotation we do not know: the dataclass validates


def _fits(value: Any, annotation: Any) -> bool:
    if annotation in (int, float):
        return isinstance(value, annotation) and not isinstance(value, bool)
    return isinstance(annotation, type) and typing.get_origin(annotation) is None and isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return (
        annotation.__name__ if isinstance(annotation, type) and not typing.get_args(annotation) else str(annotation).replace("typing.", "")
    )


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of the init fields (the configs use `from __future__ import annotations`)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# ---- help ---------------------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), whitespace collapsed; fields of base classes included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for node, following in zip(body, body[1:], strict=False):
            is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            is_doc = (
                isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)
            )
            if is_field and is_doc:
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def help_epilog(cls: type, values: Any, *, title: str = "config fields (--set KEY=VALUE)") -> str:
    """Every field with its value in `values` (an instance, or a mapping such as `defaults()` returns) and its doc."""
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        shown = repr(values[f.name]) if f.name in values else "(required)"
        doc = docs.get(f.name, "")
        lines.append(f"  {f.name} = {shown}: {doc}" if doc else f"  {f.name} = {shown}")
    return f"{title}:\n" + "\n".join(lines)


def preset_epilog(cls: type, source: str | Path | None, preset_dir: Path | Shelf | None, *, what: str = "config") -> str:
    """`help_epilog` with the values of a preset (or file); a bad preset is reported in the text, not raised."""
    label = f"{what} fields (--set KEY=VALUE), with the values of " + (f"preset {str(source)!r}" if source else "the defaults")
    try:
        return help_epilog(cls, defaults(cls, source, preset_dir, what=what), title=label)
    except (ValueError, OSError) as err:
        return f"{label}: cannot be shown: {err}"


class PresetArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog follows the preset named on its own command line.

    `--help` runs while arguments are parsed, before the preset option would be known, so
    `parse_known_args` first reads just that option (a two-stage parse) and builds the
    epilog for it: `ppo --config paper-3b --help` then lists paper-3b's values.

    It also checks the options `add_option` made required but gave old spellings: argparse counts
    only the new spelling as the option being given, so the check runs after the parse instead.
    """

    preset_help: tuple[tuple[str, ...], str | None, Callable[[str | None], str]] | None = None
    """(options, value when absent, epilog for a preset), set by `add_preset_args`."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        # Only --help shows the epilog: building it reads the preset (and prints an old name's note) on every parse otherwise.
        if self.preset_help is not None and _asks_help(sys.argv[1:] if args is None else args):
            options, fallback, epilog = self.preset_help
            probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
            probe.add_argument(*options, dest="preset", default=fallback)
            try:
                preset = probe.parse_known_args(args)[0].preset
            except argparse.ArgumentError:  # e.g. the option without a value: the full parse reports it
                preset = fallback
            self.epilog = epilog(preset)
        namespace, extras = super().parse_known_args(args, namespace)
        missing = [a.option_strings[0] for a in self._aliased_required() if getattr(namespace, a.dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return namespace, extras

    def _aliased_required(self) -> list[argparse.Action]:
        return self.__dict__.setdefault("aliased_required", [])

    def format_usage(self) -> str:
        with self._shown_required():
            return super().format_usage()

    def format_help(self) -> str:
        with self._shown_required():
            return super().format_help()

    @contextlib.contextmanager
    def _shown_required(self) -> Iterator[None]:
        """Usage shows an aliased required option without brackets, as argparse shows any required one."""
        actions = self._aliased_required()
        for action in actions:
            action.required = True
        try:
            yield
        finally:
            for action in actions:
                action.required = False


def _asks_help(args: Sequence[str]) -> bool:
    """Whether `args` hold -h or --help (or an abbreviation argparse accepts, e.g. --he), before any `--`."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "-h" or (len(arg) >= 3 and "--help".startswith(arg)):
            return True
    return False


class DeprecatedSpelling(argparse.Action):
    """An old spelling of an option, kept working but hidden: it prints a one-line note and stores
    into the new option's destination (`const` set: a flag that stores `const`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        print(f"note: {option_string} is now {self.new}; the old spelling will go", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_old_spelling(parser: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: Any = None, **kwargs: Any) -> None:
    """Keep `old` working as a hidden alias of `new` (dest `dest`); `flag`: the value a flag alias stores."""
    if flag is not None:
        kwargs.update(nargs=0, const=flag)
    parser.add_argument(old, dest=dest, action=DeprecatedSpelling, new=new, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_option(
    parser: argparse.ArgumentParser, *flags: str, old: Sequence[str] = (), required: bool = False, **kwargs: Any
) -> argparse.Action:
    """`parser.add_argument(*flags, **kwargs)`, with `old` spellings kept as hidden aliases that print a
    one-line note (`--help` shows `flags` only). `required` is met by the new spelling or an old one.

        add_option(p, "--task-preset", old=("--preset",), default="tinyzero", choices=sorted(PRESETS))
        add_option(p, "--quiet", old=("--no-progress",), action="store_true")
    """
    action = parser.add_argument(*flags, required=required and not old, **kwargs)
    for spelling in old:
        if action.nargs == 0:  # a flag (store_true, store_const): the alias stores the same constant
            add_old_spelling(parser, spelling, flags[0], action.dest, flag=action.const)
        else:
            add_old_spelling(parser, spelling, flags[0], action.dest, type=action.type, nargs=action.nargs, choices=action.choices,
                             metavar=action.metavar)  # fmt: skip
    if required and old:
        if not isinstance(parser, PresetArgumentParser):
            raise TypeError("a required option with old spellings needs a PresetArgumentParser (lab/cli.py's Parser is one)")
        parser._aliased_required().append(action)
    return action


def add_preset_args(
    parser: argparse.ArgumentParser, cls: type | Callable[[], type], preset_dir: Path | Shelf | None, *, option: str = "--config", default: str | None = None,
    shown: str | None = None, what: str = "config", help: str | None = None, old: Sequence[str] = (),
) -> None:  # fmt: skip
    """Add the preset option (`option`, dest `config`) and `--set KEY=VALUE` (dest `overrides`), and make
    `--help` list `cls`'s fields with the values of the preset given on the command line (else `shown`, else `default`).
    `old`: old spellings of the option, kept as hidden aliases with a deprecation note.

    `cls` may be a function returning the class, so that a module importing torch is imported only when this
    subcommand runs. The preset-dependent help needs the parser to be a `PresetArgumentParser` (lab/cli.py makes
    every subcommand one); any other parser gets the help of the default preset.
    """
    names = preset_names(preset_dir)
    parser.add_argument(option, dest="config", default=default, metavar="NAME|FILE" if names else "FILE",
                        help=help or f"YAML file or preset name ({', '.join(names)}); default {default}")  # fmt: skip
    for spelling in old:
        add_old_spelling(parser, spelling, option, "config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field (repeatable; the value is YAML), e.g. --set seed=1; fields listed below")  # fmt: skip
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    fallback = shown if shown is not None else default

    def epilog(source: str | None) -> str:
        return preset_epilog(cls if isinstance(cls, type) else cls(), source, preset_dir, what=what)

    if isinstance(parser, PresetArgumentParser):
        parser.preset_help = ((option, *old), fallback, epilog)
    else:
        parser.epilog = epilog(fallback)
