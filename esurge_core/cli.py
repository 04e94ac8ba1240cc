"""The ``esurge`` command line.

Built-in sub-commands: ``plugins`` and ``version``. Every registered frontend adds one more
(``generate``, ``chat``, ``serve``, ...); a frontend's module is imported only when its
sub-command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind
from esurge_core.errors import ESurgeError
from esurge_core.frontend import Frontend
from esurge_core.host_malloc import reexec_with_tuned_malloc
from esurge_core.plugin_manager import PluginManager, get_plugin_manager
from esurge_core.version import __version__


def _plugins_table(manager: PluginManager, platform: str) -> str:
    rows: list[tuple[str, ...]] = [("PLUGIN", "DISTRIBUTION", "VERSION", "STATUS")]
    for record in manager.records:
        status = record.status + (f" ({record.detail})" if record.detail else "")
        rows.append((record.name, record.distribution, record.version, status))
    component_rows: list[tuple[str, ...]] = [
        ("KIND", "NAME", "DISTRIBUTION", "VERSION", f"USABLE ON {platform.upper()}")
    ]
    requirements = Requirements(platform=platform)
    for spec in manager.registry.all():
        reasons = spec.unmet(requirements)
        usable = "yes" if not reasons else "no: " + "; ".join(reasons)
        component_rows.append(
            (spec.kind.value, spec.name, spec.origin.distribution, spec.origin.version, usable)
        )
    return _format(rows) + "\n\n" + _format(component_rows)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def _run_plugins(args: argparse.Namespace) -> int:
    from esurge_core.platform import current_platform

    platform = args.platform or current_platform()
    print(_plugins_table(get_plugin_manager(), platform))
    return 0


def _run_version(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    print(f"esurge-core {__version__}")
    for record in manager.records:
        if record.distribution != "esurge-core":
            print(f"{record.distribution} {record.version} ({record.status})")
    return 0


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser; only the frontend named in ``argv`` (if any) is imported."""
    parser = argparse.ArgumentParser(
        prog="esurge", description="eSurge: fast batched LLM inference on JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="list discovered plugins and components")
    plugins.add_argument(
        "--platform", choices=["cpu", "gpu", "tpu"], help="check usability for this platform"
    )
    plugins.set_defaults(handler=_run_plugins)
    sub.add_parser("version", help="print versions").set_defaults(handler=_run_version)

    manager = get_plugin_manager()
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for spec in manager.registry.all(ComponentKind.FRONTEND):
        frontend_parser = sub.add_parser(spec.name, help=spec.description)
        if spec.name == chosen:
            frontend: Frontend = spec.load()()
            frontend.add_arguments(frontend_parser)
            frontend_parser.set_defaults(handler=frontend.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``esurge`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except ESurgeError as exc:
        print(f"esurge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> int:
    """The ``esurge`` console script: :func:`main`, started with eSurge's malloc settings.

    Re-executes the command once with the variables of :mod:`esurge_core.host_malloc` set
    (Linux with glibc; ``ESURGE_TUNE_MALLOC=0`` turns it off), then runs :func:`main`.
    """
    reexec_with_tuned_malloc()
    return main()


if __name__ == "__main__":
    raise SystemExit(console_main())
