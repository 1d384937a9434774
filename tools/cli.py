"""The error boundary of every ``evcmae-*`` command: a user's mistake is one line, a bug a traceback.

    @entry("evcmae-info")
    def main(argv=None) -> int: ...

    @entry("evcmae-pretrain")          # above Hydra's decorator, so it sees what the job raised
    @hydra.main(...)
    def main(cfg): ...

An error the user can fix (``events.errors.EvcmaeError`` and its kinds: bad event or label files,
configs, checkpoints, output folders; a missing or unreadable file; a Hydra override or config that
does not compose) prints ``evcmae-<cmd>: error: <file or key>: <problem>`` on stderr and exits 2
(a ``main(argv)`` returns 2, which its console script passes to ``sys.exit``),
also when it arrives wrapped in another exception (Hydra's instantiate wraps what constructors
raise). ``--debug`` anywhere on the command line, or ``HYDRA_FULL_ERROR=1``, shows the traceback
instead. Anything else is a bug and keeps its traceback.

Hydra apps: Hydra prints a job's exception itself (a trimmed traceback and an "Error executing
job" line, exit 1), so the boundary also guards the job function inside Hydra's decorator (the
``task_function`` it closes over) and sets ``HYDRA_FULL_ERROR=1`` so that errors outside the job
(a bad override) reach it too. The decision is passed to child processes (DDP ranks re-run the
command) in ``EVCMAE_DEBUG``.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings

from evcmae.events.errors import EvcmaeError

DEBUG_FLAG = "--debug"
_DEBUG_ENV = "EVCMAE_DEBUG"
# OSErrors that name a path the user gave: user errors, not bugs.
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _hydra_user_errors() -> tuple[type, ...]:
    """Hydra's errors about overrides and configs, and OmegaConf's about missing or mistyped keys
    (not ``InstantiationException``: it wraps whatever a constructor raised, a bug as well)."""
    try:
        from hydra import errors
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:
        return ()
    return (
        errors.OverrideParseException,
        errors.ConfigCompositionException,
        errors.SearchPathException,
        errors.MissingConfigException,
        OmegaConfBaseException,
    )


def user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc`` (itself, or one it was raised from), None for a bug."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (EvcmaeError, *_USER_OS_ERRORS, *_hydra_user_errors())):
            return exc
        exc = exc.__cause__  # explicit chaining only: an error raised while handling another is a bug
    return None


def message(exc: BaseException) -> str:
    """One line: ``<file or key>: <problem>``."""
    if isinstance(exc, OSError) and not isinstance(exc, EvcmaeError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc)
        cause = exc.__cause__
        if cause is not None and type(exc).__module__.startswith("hydra") and str(cause) not in text:
            text = f"{text} {cause}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def _take_debug_flag(args: tuple) -> tuple[bool, tuple, list | None]:
    """Remove ``--debug`` from the argv the command will parse: the list passed in, else sys.argv."""
    if args and isinstance(args[0], (list, tuple)):
        argv = list(args[0])
        return DEBUG_FLAG in argv, ([a for a in argv if a != DEBUG_FLAG], *args[1:]), None
    saved = list(sys.argv)
    if DEBUG_FLAG in sys.argv[1:]:
        sys.argv[:] = [sys.argv[0]] + [a for a in sys.argv[1:] if a != DEBUG_FLAG]
        return True, args, saved
    return False, args, saved


def _debug_requested(flag: bool) -> bool:
    inherited = os.environ.get(_DEBUG_ENV)
    if inherited is not None:
        return flag or inherited == "1"
    return flag or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _guard_hydra_job(main, prog: str, report) -> None:
    """Wrap the job function of a ``hydra.main``-decorated ``main`` (a closure cell of Hydra's
    wrapper) so a user error stops the job as one line before Hydra reports it as a failure."""
    names = getattr(getattr(main, "__code__", None), "co_freevars", ())
    if "task_function" not in names:
        return
    cell = main.__closure__[names.index("task_function")]
    task = cell.cell_contents

    @functools.wraps(task)
    def guarded(cfg):
        try:
            return task(cfg)
        except Exception as exc:
            cause = user_error(exc)
            if cause is None or os.environ.get(_DEBUG_ENV) == "1":
                raise
            report(message(cause))
            raise SystemExit(2) from None

    cell.cell_contents = guarded


def entry(prog: str):
    """Decorate a command's ``main`` with the error boundary (see the module docstring)."""

    def decorate(main):
        returns_status = "argv" in inspect.signature(main).parameters

        def report(text: str) -> None:
            print(f"{prog}: error: {text}", file=sys.stderr)

        def fail(text: str):
            report(text)
            if returns_status:
                return 2
            raise SystemExit(2)

        _guard_hydra_job(main, prog, report)

        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            flag, args, saved_argv = _take_debug_flag(args)
            debug = _debug_requested(flag)
            saved_env = {k: os.environ.get(k) for k in (_DEBUG_ENV, "HYDRA_FULL_ERROR")}
            os.environ[_DEBUG_ENV] = "1" if debug else "0"
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; this boundary reports
            saved_format = warnings.formatwarning
            warnings.formatwarning = lambda msg, category, *_: f"{prog}: warning: {msg}\n"
            try:
                return main(*args, **kwargs)
            except SystemExit as exc:
                if isinstance(exc.code, str):  # sys.exit("message"): a user error
                    return fail(exc.code.removeprefix(f"{prog}: "))
                raise
            except Exception as exc:
                cause = user_error(exc)
                if cause is None or debug:
                    raise
                return fail(message(cause))
            finally:
                warnings.formatwarning = saved_format
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                if saved_argv is not None:
                    sys.argv[:] = saved_argv

        return wrapper

    return decorate
