"""The ``semires`` command line: a thin layer that parses arguments and calls the library.

Each command group lives in its own small module and registers itself on the one typer app:

- ``semires data synth|stats|split|show``        -> :mod:`semires.cli.data`
- ``semires propose`` / ``semires proposals ...``  -> :mod:`semires.cli.proposals`
- ``semires model list|pretrain``                  -> :mod:`semires.cli.model`
- ``semires train|evaluate|predict``               -> :mod:`semires.cli.train`
- ``semires score``                                -> :mod:`semires.cli.score`
- ``semires run``                                  -> :mod:`semires.cli.run`

Errors caused by user input (:class:`semires.errors.SemiresError`) are printed as one line on
stderr, without a traceback, and the process exits with a non-zero code.
"""

from __future__ import annotations

import os
import sys

# Idle OpenMP threads sleep instead of spinning. With spinning (the default), a CPU training step
# on 2 cores became >10x slower whenever another process competed for the cores (measured:
# 7.2 s vs 0.47 s per step); on an idle machine the two policies run at the same speed. Must be
# set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from semires import __version__


def _flags_take_no_value() -> None:
    """typer's help panel prints a type after every option, so flags (``--quiet``, ``--help``)
    read ``<bool>`` as if they took a value; show no type for them."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_semires_flags", False):
        return

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._semires_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

app = typer.Typer(
    name="semires",
    help="SemiRES: semi-supervised referring expression segmentation with SAM-guided pseudo-labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"semires {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help="Import this module first (repeatable): your own refinement strategies, data "
        "formats or proposal generators, registered when it is imported. Also read from "
        "SEMIRES_PLUGINS (comma-separated) and the 'semires.plugins' entry points.",
    ),
) -> None:
    """SemiRES command line."""
    from semires.utils.registry import load_plugins, use_plugins

    if plugin:
        use_plugins(plugin)
    else:
        load_plugins()


def _register() -> None:
    from semires.cli import data, model, proposals, run, score, serve, train

    for module in (data, proposals, model, train, score, run, serve):
        module.register(app)
    _reflow_help(app)


def _reflow_help(group: typer.Typer) -> None:
    """Command help from docstrings, one paragraph per line: typer's help panel keeps the
    docstring's line breaks after the first paragraph, which then wrap a second time."""
    import inspect

    for cmd in group.registered_commands:
        doc = cmd.help or inspect.getdoc(cmd.callback)
        if doc:
            paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
            cmd.help = "\n\n".join(paragraphs)
    for sub in group.registered_groups:
        _reflow_help(sub.typer_instance)


_register()


#: the commands that resume where an interrupted run of the same command stopped
RESUMABLE = frozenset({"train", "run", "propose", "proposals import", "data synth"})

#: the exit code of a command stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED = 130


def command_of(argv: list[str]) -> str:
    """The command an argument list runs (``"train"``, ``"proposals import"``), after the
    global options; "" when there is none."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--plugin":
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
            if words[0] not in ("data", "proposals", "model") or len(words) == 2:
                break
    return " ".join(words)


def interrupted(argv: list[str]) -> int:
    """Say that the command was stopped by Ctrl-C (and, where it resumes, how to go on)."""
    resumes = command_of(argv) in RESUMABLE
    typer.echo("interrupted" + ("; rerun the same command to resume" if resumes else ""), err=True)
    return INTERRUPTED


def disk_full_message(exc: BaseException) -> str | None:
    """The one-line message of a full disk behind ``exc`` (None when it is something else)."""
    from semires.utils.io import disk_full_cause, disk_full_error

    cause = disk_full_cause(exc)
    if cause is None:
        return None
    if cause.filename:
        return str(disk_full_error(cause.filename, cause))
    return (
        f"disk full: a write failed ({cause.strerror}); free some space, then rerun the same "
        "command"
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    from semires.errors import SemiresError
    from semires.runtime.logs import quiet_tokenizer_length_note

    quiet_tokenizer_length_note()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="semires", standalone_mode=False)
        if rv == INTERRUPTED:  # typer turns Ctrl-C into this return value
            return interrupted(args)
        if isinstance(rv, int):
            return rv
    except SemiresError as err:
        typer.echo(f"error: {err}", err=True)
        return err.exit_code
    except typer.Exit as ex:
        return ex.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return INTERRUPTED
    except KeyboardInterrupt:
        return interrupted(args)
    except Exception as exc:
        full = disk_full_message(exc)
        if full is not None:  # a writer outside semires.utils.io met a full disk
            typer.echo(f"error: {full}", err=True)
            return 2
        if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
            typer.echo(f"error: {exc.filename}: a file is where a folder is expected", err=True)
            return 2
        # Usage errors (typer bundles its own click): print the message, exit with click's code.
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            exc.show()
            return exc.exit_code
        raise
    return 0


def entry() -> None:
    from semires.utils.progress import quiet_third_party_bars

    quiet_third_party_bars()  # before tqdm is imported: no bars in a redirected log
    sys.exit(main())
