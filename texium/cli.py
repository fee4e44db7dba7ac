"""The `texium` command: jobs as code against a running server's HTTP API.

    texium export [--format json|yaml] [-o FILE]
    texium import FILE [--apply] [--delete] [--skip-unrestorable]
    texium ping-run TOKEN_OR_URL -- command args...   (a heartbeat monitor's wrapper: texium/pingrun.py)

Both take --url (default $TEXIUM_URL, else http://127.0.0.1:8000) and an API key (sent as
`Authorization: Bearer`, needed when the server requires keys) from $TEXIUM_API_KEY, or a file
named by --key-file or $TEXIUM_API_KEY_FILE. --key still works but warns: every user of the
machine sees a command's arguments (ps, /proc/PID/cmdline).
`import` prints its plan and changes nothing without --apply. Exit codes: 0 done, 1 the server
failed or refused, 2 a bad file or bad arguments. See texium/ascode.py for the document.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

DEFAULT_URL = "http://127.0.0.1:8000"


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line and exit code 2 (argparse would print the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"texium: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the Texium server (default: $TEXIUM_URL, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--key-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="read the API key (sent as Authorization: Bearer; needed when the server requires keys) from FILE "
        "(default: $TEXIUM_API_KEY, else the file $TEXIUM_API_KEY_FILE names)",
    )
    common.add_argument(
        "--key",
        default=argparse.SUPPRESS,
        help="the API key itself: discouraged, every user of this machine sees it in ps; use TEXIUM_API_KEY "
        "or --key-file",
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for each answer (default 30)"
    )
    parser = _Parser(
        prog="texium",
        parents=[common],
        description="Jobs as code: export a Texium server's users, servers and jobs as one JSON or YAML file, "
        "and import such a file (a plan first; --apply makes the changes).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write users (without keys), servers (without passwords) and jobs as one document",
        description="Write the server's users (without keys), servers (without passwords) and jobs as one "
        "document: to standard output, or to FILE with -o.",
    )
    export.add_argument(
        "--format", choices=("json", "yaml"), help="json (the default) or yaml; -o FILE.yaml/.yml means yaml"
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    imp = commands.add_parser(
        "import",
        parents=[common],
        help="show what a document would change (a plan); --apply changes it",
        description="Compare FILE (JSON or YAML; '-' for standard input) with the server and print the plan: "
        "creates, updates (with the fields that change), deletes and what stays. Users are matched by "
        "email, servers and jobs by owner and name. Nothing changes without --apply.",
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--apply", action="store_true", help="make the changes of the plan")
    imp.add_argument(
        "--delete",
        action="store_true",
        help="also delete what the server has and the file does not (only kinds the file has a section for)",
    )
    imp.add_argument(
        "--skip-unrestorable",
        action="store_true",
        help="with --apply, leave out creates and updates that need a secret the file only has as ***",
    )
    ping_run = commands.add_parser(
        "ping-run",
        parents=[common],
        help="run a command under a heartbeat monitor: ping start, run, ping its exit code and output",
        description="Ping the monitor's /start, run the command, then ping its exit code with the last 10 KB "
        "of its output; exit with the command's code (a failed ping only warns). TOKEN_OR_URL: the ping "
        "token (the server from --url or $TEXIUM_URL) or the whole ping URL.",
    )
    ping_run.add_argument("monitor", metavar="TOKEN_OR_URL")
    ping_run.add_argument("run_command", metavar="-- COMMAND", nargs=argparse.REMAINDER)
    return parser


def _ping_run(args: argparse.Namespace) -> int:
    from texium.pingrun import run

    command = args.run_command[1:] if args.run_command[:1] == ["--"] else args.run_command
    if not command:
        print("texium: error: ping-run needs a command after --", file=sys.stderr)
        return 2
    return run(args.monitor, command, getattr(args, "url", None) or os.environ.get("TEXIUM_URL") or DEFAULT_URL)


def _actor() -> str:
    try:
        return f"{getpass.getuser()} (texium import)"
    except Exception:
        return "texium import"


def _key(args: argparse.Namespace) -> str | None:
    """--key, --key-file, $TEXIUM_API_KEY, $TEXIUM_API_KEY_FILE: the first given."""
    from texium.ascode import CliError, read_key_file

    flag, key_file = getattr(args, "key", None), getattr(args, "key_file", None)
    if flag and key_file:
        raise CliError("give --key or --key-file, not both")
    if flag:
        print(
            "texium: warning: --key shows the key to every user of this machine (ps); use TEXIUM_API_KEY or --key-file",
            file=sys.stderr,
        )
        return flag
    if key_file:
        return read_key_file(key_file)
    if os.environ.get("TEXIUM_API_KEY"):
        return os.environ["TEXIUM_API_KEY"]
    if os.environ.get("TEXIUM_API_KEY_FILE"):
        return read_key_file(os.environ["TEXIUM_API_KEY_FILE"])
    return None


def _client(args: argparse.Namespace):
    from texium.ascode import Client

    url = getattr(args, "url", None) or os.environ.get("TEXIUM_URL") or DEFAULT_URL
    key = _key(args)
    timeout = getattr(args, "timeout", 30.0)
    if not timeout > 0:
        from texium.ascode import CliError

        raise CliError("--timeout must be a positive number of seconds")
    return Client(url, key, actor=_actor(), timeout=timeout)


def _export(args: argparse.Namespace) -> int:
    from texium.ascode import CliError, dump_document, export_document, fetch_state

    fmt = args.format
    if fmt is None:
        fmt = "yaml" if args.output and args.output.lower().endswith((".yaml", ".yml")) else "json"
    client = _client(args)
    document = export_document(fetch_state(client))
    text = dump_document(document, fmt)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    counts = ", ".join(
        f"{len(document[k])} {k if len(document[k]) != 1 else k[:-1]}" for k in ("users", "servers", "jobs")
    )
    print(f"Exported {counts} from {client.url} to {args.output}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from texium.ascode import CliError, apply_plan, fetch_state, make_plan, print_plan, read_document

    document = read_document(args.file)
    client = _client(args)
    state = fetch_state(client, who=True)
    plan = make_plan(document, state, client, delete=args.delete)
    print(f"Plan for {client.url} from {document.name}:")
    print_plan(plan, print)
    if plan.problems:
        raise CliError(f"{document.name} cannot be applied: {len(plan.problems)} problem(s), shown above")
    if not args.apply:
        if plan.work:
            print("Nothing was changed: run again with --apply to make these changes.")
        return 0
    blocked = [c for c in plan.work if c.unrestorable]
    if blocked and not args.skip_unrestorable:
        raise CliError(
            f"nothing was changed: {len(blocked)} change(s) need a secret the file only has as *** (see the "
            "warnings above); give the values, or --skip-unrestorable to make the other changes"
        )
    if not plan.work:
        return 0
    print("Applying:")
    done, skipped = apply_plan(plan, state, client, print, skip=args.skip_unrestorable)
    print(f"Done: {done} change(s) made" + (f", {skipped} skipped (a secret only as ***)." if skipped else "."))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "ping-run":  # no API key, no ascode: the wrapper alone
        return _ping_run(args)
    from texium.ascode import CliError

    try:
        return _export(args) if args.command == "export" else _import(args)
    except CliError as exc:
        sys.stdout.flush()
        print(f"texium: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("texium: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `texium export | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:  # a bug: still one line, never a traceback
        print(f"texium: internal error ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
