"""The flags of ``mine``, generated from the Config fields.

Each field of ``miner.config.Config`` and its sections carries its default, its help
text and how the flag is spelled (``miner.config.setting``); this module turns a
selection of them into click options, so that a command has exactly the settings it
uses (``mine embed -k 3`` is a usage error), every flag shows its default, and a new
field is a flag of ``mine run`` without a line here:

    @main.command(cls=ConfigCommand)
    @config_options("knn", "seed", *EXECUTION)
    def knn(directory, settings):
        cfg = settings.config(out=directory)

``Settings.config`` builds the Config the same way for every command: the defaults,
then the ``--config`` file, then the command's arguments, then the flags given on the
command line, checked whole; ``Settings.origin`` says where each value came from
(``mine config`` prints it).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Optional

import click
from click.core import ParameterSource

from miner.config import Config

SECTIONS = ("prepare", "embed", "knn", "score", "filters")
SECTION_TITLES = {None: "Run settings", "prepare": "Prepare settings [prepare]",
                  "embed": "Embed settings [embed]", "knn": "kNN settings [knn]",
                  "score": "Score settings [score]", "filters": "Filter settings [filters]"}
# where the tasks of any stage run (miner.executor.executor_for)
EXECUTION = ("executor", "ray_address", "workers")


@dataclass(frozen=True)
class Setting:
    """One Config field: ``section`` None for the top level."""

    name: str
    section: Optional[str]
    field: dataclasses.Field
    hint: Any  # the type, Optional[X] as X

    @property
    def meta(self) -> typing.Mapping[str, Any]:
        return self.field.metadata

    @property
    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default


def _settings() -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for section in (None, *SECTIONS):
        cls = Config if section is None else Config.__dataclass_fields__[section].default_factory
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS:
                continue
            hint = hints[f.name]
            if typing.get_origin(hint) is typing.Union:  # Optional[X]
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            out[f.name] = Setting(f.name, section, f, hint)
    return out


SETTINGS: dict[str, Setting] = _settings()  # by name, in Config order


def select(*names: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Setting names from section names (``"knn"``: all of its fields) and setting
    names, in Config order, without ``exclude``."""
    wanted: set[str] = set()
    for name in names:
        if name in SECTIONS:
            wanted |= {n for n, s in SETTINGS.items() if s.section == name}
        elif name in SETTINGS:
            wanted.add(name)
        else:
            raise ValueError(f"no setting or section {name!r}")
    return [n for n in SETTINGS if n in wanted and n not in exclude]


ALL = tuple(SETTINGS)


class _LidThreshold(click.ParamType):
    """``0.7`` -> ``(None, 0.7)`` (every language), ``de=0.7`` -> ``("de", 0.7)``."""

    name = "[LANG=]P"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        lang, sep, number = str(value).rpartition("=")
        try:
            prob = float(number)
        except ValueError:
            self.fail(f"{value!r}: expected P or LANG=P, e.g. 0.5 or de=0.7", param, ctx)
        if sep and not lang:
            self.fail(f"{value!r}: expected a language before '='", param, ctx)
        return (lang or None, prob)


def _lang_key(code: str) -> str:
    """A language code normalised (``deu`` -> ``de``: ``de=0.7`` then replaces a file's
    ``deu``); a bad one as it is, for ``Config.validate`` to name."""
    from miner.errors import MinerError
    from miner.lid import normalize_lang

    try:
        return normalize_lang(code)
    except MinerError:
        return code


class SettingOption(click.Option):
    """A click option that sets one Config field (``setting``)."""

    def __init__(self, *args, setting: Setting, **kwargs):
        super().__init__(*args, **kwargs)
        self.setting = setting

    def label(self, value: Any) -> str:
        """The flag as given: ``--keep-copies`` when that side of a bool was used."""
        if self.is_bool_flag and self.secondary_opts and value is False:
            return self.secondary_opts[0]
        return self.opts[0]


def _default_text(s: Setting) -> Any:
    """What the help shows as the default: True (click formats the value) or words."""
    if "default_text" in s.meta:
        return s.meta["default_text"]
    if isinstance(s.default, (list, tuple, dict)):
        return ", ".join(map(str, s.default)) or "none"
    return True


def make_parameter(s: Setting) -> click.Parameter:
    """The click parameter of a setting: a bool is ``--x/--no-x``, a list a repeatable
    option, ``lid_threshold`` the ``[LANG=]P`` option that sets ``lid_thresholds`` too."""
    dash = s.name.replace("_", "-")
    if s.meta.get("argument"):  # inputs: the INPUTS... of `mine run`
        return click.Argument([s.name], nargs=-1, type=click.Path())
    kwargs: dict[str, Any] = dict(help=s.meta["help"], show_default=_default_text(s),
                                  setting=s)
    decls = list(s.meta.get("flags") or ())
    if s.hint is bool:
        decls = decls or [f"--{dash}/--no-{dash}"]
        kwargs["default"] = s.default
    elif typing.get_origin(s.hint) is list:
        kwargs.update(multiple=True, default=())
    elif s.name == "lid_threshold":
        kwargs.update(multiple=True, type=_LidThreshold(), default=(),
                      show_default=str(s.default))
    else:
        choices = s.meta.get("choices")
        kwargs["type"] = click.Choice(choices) if choices else s.hint
        kwargs["default"] = s.default
    if "metavar" in s.meta:
        kwargs["metavar"] = s.meta["metavar"]
    return SettingOption([*(decls or [f"--{dash}"]), s.name], **kwargs)


class Settings:
    """The ``--config`` file and the settings given on a command's line, made into a
    Config by ``config``; ``origin`` then says where each setting came from."""

    def __init__(self, config_file: Optional[str], given: list[tuple[Setting, str, Any]]):
        self.config_file = config_file
        self.given = given  # (setting, how it was given: "flag -k", value)
        self.origin: dict[str, str] = {}

    def config(self, **arguments: Any) -> Config:
        """Defaults, then the config file, then ``arguments`` (what the command's
        positional arguments say, e.g. ``out=DIRECTORY``; None: not given), then the
        flags; validated (``Config.validate``: a MinerError names the first bad one)."""
        origin: dict[str, str] = {}
        cfg = Config.from_toml(self.config_file, origin) if self.config_file else Config()
        cfg.update(arguments, origin=origin, source="argument")
        for s, source, value in self.given:
            if s.name == "lid_threshold":  # ("de", 0.7) per language, (None, 0.6) for all
                per_lang = {lang: p for lang, p in value if lang is not None}
                every = [p for lang, p in value if lang is None]
                if every:
                    cfg.update({"lid_threshold": every[-1]}, origin=origin, source=source)
                if per_lang:  # on top of the file's, one entry per language
                    before = origin.get("prepare.lid_thresholds")
                    merged = {_lang_key(k): v for k, v in cfg.prepare.lid_thresholds.items()}
                    merged.update((_lang_key(k), v) for k, v in per_lang.items())
                    cfg.update({"lid_thresholds": merged}, origin=origin,
                               source=f"{before} and {source}" if before else source)
                continue
            cfg.update({s.name: list(value) if isinstance(value, tuple) else value},
                       origin=origin, source=source)
        self.origin = origin
        return cfg.validate()


def config_options(*names: str, exclude: tuple[str, ...] = ()):
    """Decorator: ``--config`` and a flag for each selected setting (``select``); the
    command receives them as ``settings`` (a ``Settings``), not one by one."""
    # a setting set through another's flag (lid_thresholds: --lid-threshold LANG=P) has none
    chosen = [n for n in select(*names, exclude=exclude) if "via" not in SETTINGS[n].meta]
    params = [click.Option(["--config", "config_file"], type=click.Path(dir_okay=False),
                           help="TOML file of settings (the names of the flags, as "
                                "`mine config` prints them); flags given win.")]
    params += [make_parameter(SETTINGS[n]) for n in chosen]

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            ctx = click.get_current_context()
            given = []
            for name in chosen:
                value = kwargs.pop(name)
                if ctx.get_parameter_source(name) not in (ParameterSource.COMMANDLINE,
                                                          ParameterSource.ENVIRONMENT):
                    continue
                param = next(p for p in ctx.command.params if p.name == name)
                label = f"flag {param.label(value)}" if isinstance(param, SettingOption) \
                    else f"argument {param.human_readable_name}"
                given.append((SETTINGS[name], label, value))
            return fn(*args, settings=Settings(kwargs.pop("config_file"), given), **kwargs)

        # as click's own decorators do: the list is reversed when the command is built
        memo = wrapper.__dict__.setdefault("__click_params__", [])
        memo.extend(reversed(params))
        return wrapper

    return decorate


class ConfigCommand(click.Command):
    """A command whose ``--help`` lists the settings by section, as in a config file."""

    def format_options(self, ctx, formatter):
        groups: dict[Optional[str], list] = {}
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):  # arguments are in the usage line
                continue
            record = param.get_help_record(ctx)
            if record is None:
                continue
            key = param.setting.section if isinstance(param, SettingOption) else "options"
            groups.setdefault(key, []).append(record)
        for key in ("options", None, *SECTIONS):
            if key in groups:
                with formatter.section("Options" if key == "options" else SECTION_TITLES[key]):
                    formatter.write_dl(groups[key])
