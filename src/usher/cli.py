"""The ``usher`` command: serve, manage accounts, call the API, migrate."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from usher import accounts
from usher.config import Settings
from usher.demo import Demo, banner, prepare
from usher.progress import Bars
from usher.protocol.errors import ConfigError, UsherError
from usher.storage import retention, storage_for_url
from usher.storage.base import PanelSessionFilter, Storage

T = TypeVar("T")

#: The GIL switch interval of ``usher serve`` (see cmd_serve).
SWITCH_INTERVAL_S = 0.00005


def _with_storage(database: str | None, work: Callable[[Storage], Awaitable[T]]) -> T:
    async def run() -> T:
        storage = storage_for_url(Settings.from_env(database_url=database).database_url)
        await storage.open()
        try:
            return await work(storage)
        finally:
            await storage.close()

    return asyncio.run(run())


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- serve ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from usher.accesslog import RedactPasses
    from usher.web.app import create_app
    from usher.web.connections import ConnectionGuard, protocol_class

    settings = Settings.from_env(database_url=args.database)
    # Migrate (or refuse a newer schema) here, so a problem is one clear line
    # instead of a failed ASGI lifespan.
    demo = _with_storage(args.database, _demo if args.demo else _no_demo)
    if demo is not None:
        print(banner(demo, args.host, args.port), flush=True)
    app = create_app(settings)
    # The SQLite writer thread gives up the GIL around every SQLite call and
    # must win it back from the event loop each time. Under a flood of
    # requests the loop never idles, so each handback waited a full switch
    # interval (5 ms by default): with 1,024 connections being shed, the
    # writer held the GIL in 6 % of py-spy --gil samples and goodput
    # collapsed. 50 µs cuts that wait: measured with wrk at 4,096
    # connections, goodput went from 440-630 to 1,360-1,420 checks/s, and at
    # 64 connections throughput did not drop.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    _fit_open_files(settings.max_connections)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        # httptools, with deadlines for slow clients and a connection cap.
        http=protocol_class(ConnectionGuard(settings, app.state.metrics)),
        access_log=args.access_log,
        log_level=args.log_level,
        lifespan="on",
        # Callers behind a proxy are handled by USHER_CALLBACK_ALLOW and
        # X-Real-IP; uvicorn must not rewrite the peer address itself.
        proxy_headers=False,
        server_header=False,
    )
    # After Config, which (re)configures uvicorn's loggers.
    logging.getLogger("uvicorn.access").addFilter(RedactPasses())
    uvicorn.Server(config).run()
    return 0


#: Descriptors ``usher serve`` needs besides its connections: the database
#: (and its WAL), PostgreSQL connections, the listening socket, logs.
_SPARE_FILES = 256


def _fit_open_files(max_connections: int) -> None:
    """Raise the soft open-file limit to fit ``USHER_MAX_CONNECTIONS``.

    A common default soft limit is 1,024: past it, accepting fails instead
    of the connection cap answering 503.
    """
    import resource

    wanted = max_connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        logging.getLogger("usher.serve").warning(
            "The open-file limit (%d) is below USHER_MAX_CONNECTIONS + %d; connections past it "
            "will fail instead of being answered 503. Lower USHER_MAX_CONNECTIONS or raise "
            "the limit (ulimit -n, or LimitNOFILE= in a systemd unit).",
            raised,
            _SPARE_FILES,
        )


async def _no_demo(storage: Storage) -> None:
    await storage.schema_version()


async def _demo(storage: Storage) -> Demo:
    return await prepare(storage, int(time.time()))


# -- accounts --------------------------------------------------------------------


def cmd_account_create(args: argparse.Namespace) -> int:
    async def work(storage: Storage) -> dict[str, object]:
        account = await accounts.create(
            storage, args.username, cdn=args.cdn, api_key=args.api_key, secret=args.secret
        )
        return accounts.credentials(account)

    created = _with_storage(args.database, work)
    if args.json:
        print(json.dumps(created))
    else:
        for name, value in created.items():
            print(f"{name:9}{value}")
    return 0


def cmd_account_list(args: argparse.Namespace) -> int:
    async def work(storage: Storage) -> list[dict[str, object]]:
        return [accounts.public_fields(a) for a in await storage.list_accounts()]

    listed = _with_storage(args.database, work)
    if args.json:
        print(json.dumps(listed))
        return 0
    if not listed:
        print("No accounts yet; create one with `usher account create --username NAME`.")
        return 0
    print(f"{'cdn':>6}  {'username':20}  {'api_key':32}  state")
    for row in listed:
        state = "disabled" if row["disabled"] else "active"
        print(f"{row['cdn']:>6}  {row['username']!s:20}  {row['api_key']!s:32}  {state}")
    return 0


def cmd_account_rotate(args: argparse.Namespace) -> int:
    async def work(storage: Storage) -> dict[str, object]:
        account = await accounts.find(storage, cdn=args.cdn, username=args.username)
        updated = await storage.update_account(account.cdn, secret=accounts.new_secret())
        assert updated is not None  # found just above, and accounts are never deleted
        # A secret is rotated because it may have leaked: whoever signed in to
        # the control panel with it must sign in again.
        await storage.delete_panel_sessions(PanelSessionFilter(cdn=account.cdn))
        return accounts.credentials(updated)

    rotated = _with_storage(args.database, work)
    if args.json:
        print(json.dumps(rotated))
    else:
        print(f"New secret for cdn {rotated['cdn']} ({rotated['username']}): {rotated['secret']}")
        print("The old secret no longer verifies; update every client that signs requests.")
    return 0


def _read_new_password() -> str:
    """A password from a terminal prompt (asked twice), or one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("New panel password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise ConfigError("The two passwords differ; nothing was changed.")
        return first
    line = sys.stdin.readline()
    if not line:
        raise ConfigError(
            "No password on standard input; pipe one line, or run in a terminal to be prompted."
        )
    return line.rstrip("\r\n")


def cmd_account_set_panel_password(args: argparse.Namespace) -> int:
    from usher import passwords

    async def work(storage: Storage) -> tuple[dict[str, object], int]:
        account = await accounts.find(storage, cdn=args.cdn, username=args.username)
        hashed = None
        if not args.clear:
            hashed = passwords.hash_password(passwords.check_new_password(_read_new_password()))
        await storage.set_panel_password(account.cdn, hashed, now=int(time.time()))
        # Signed-in browsers keep no access that the old password gave.
        ended = await storage.delete_panel_sessions(PanelSessionFilter(cdn=account.cdn))
        return accounts.public_fields(account), ended

    account, ended = _with_storage(args.database, work)
    named = f"cdn {account['cdn']} ({account['username']})"
    if args.clear:
        print(f"Removed the panel password of {named}; it signs in with its API key and secret.")
    else:
        print(f"Set the panel password of {named}.")
    if ended:
        print(f"Signed out {ended} panel session{'s' if ended != 1 else ''} of this account.")
    return 0


def _set_disabled(disabled: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        async def work(storage: Storage) -> dict[str, object]:
            account = await accounts.find(storage, cdn=args.cdn, username=args.username)
            updated = await storage.update_account(account.cdn, disabled=disabled)
            assert updated is not None  # found just above, and accounts are never deleted
            return accounts.public_fields(updated)

        changed = _with_storage(args.database, work)
        state = "disabled" if disabled else "enabled"
        print(f"Account cdn {changed['cdn']} ({changed['username']}) is {state}.")
        return 0

    return command


# -- call ------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from usher.client import Client, ClientError

    fields: dict[str, object] = {}
    for item in args.fields:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{item!r} is not FIELD=VALUE; write e.g. key=mystream.53ff.123.")
        fields[name] = value
    url = args.url or os.environ.get("USHER_URL") or "http://127.0.0.1:8080/api"
    cdn = args.cdn or os.environ.get("USHER_CDN")
    api_key = args.api_key or os.environ.get("USHER_API_KEY")
    secret = args.secret or os.environ.get("USHER_SECRET")
    missing = [
        flag
        for flag, value in (
            ("--cdn/USHER_CDN", cdn),
            ("--api-key/USHER_API_KEY", api_key),
            ("--secret/USHER_SECRET", secret),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"Missing credentials: {', '.join(missing)}.")
    assert cdn is not None and api_key is not None and secret is not None  # checked above
    if not str(cdn).isdigit():
        raise ConfigError(f"The cdn must be a whole number, got {cdn!r}.")
    try:
        with Client(url, cdn=int(cdn), api_key=api_key, secret=secret) as client:
            response: dict[str, Any] = client.call(args.command, **fields)
    except ClientError as exc:
        raise ConfigError(str(exc)) from None
    _print_json(response)
    return 0 if response.get("status") == "success" else 1


# -- db --------------------------------------------------------------------------


def cmd_db_migrate(args: argparse.Namespace) -> int:
    async def work(storage: Storage) -> int:
        return await storage.schema_version()

    version = _with_storage(args.database, work)
    print(f"The database is at schema version {version}.")
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    from usher.storage.copy import copy_database

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    with Bars() as bars:
        result = copy_database(
            args.source,
            args.target,
            signatures=args.signatures,
            batch=args.batch_size,
            progress=bars,
        )
    for table, source, target in result.counts:
        mark = "ok" if source == target else "MISMATCH"
        print(f"  {table:16} source {source:>12,}  destination {target:>12,}  {mark}")
    if not result.verified:
        print("The counts differ: was the source written to during the copy? Stop the "
              "nodes that use it and run the same command again.", file=sys.stderr)  # fmt: skip
        return 1
    print("Copy complete; every table's row count matches the source.")
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from usher.storage.sqlite import sqlite_path
    from usher.storage.sqlite.backup import backup_sqlite

    url = Settings.from_env(database_url=args.database).database_url
    if not url.startswith("sqlite:"):
        raise ConfigError(
            "usher db backup copies SQLite databases only; back up PostgreSQL with its own "
            "tools, such as pg_dump --format=custom --file=usher.dump DBNAME, which takes the "
            "whole database in one consistent snapshot while Usher runs (see docs/operations.md)."
        )
    with Bars() as bars:
        result = backup_sqlite(sqlite_path(url), Path(args.to), force=args.force, progress=bars)
    print(
        f"Backed up to {result.path} ({result.bytes:,} bytes in {result.seconds:.1f} s); "
        "the copy passed PRAGMA integrity_check."
    )
    return 0


def cmd_db_prune(args: argparse.Namespace) -> int:
    from usher.durations import parse_duration

    older_than = parse_duration(args.attempts_older_than, "--attempts-older-than")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    before = retention.cutoff(time.time(), older_than)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before))

    async def work(storage: Storage) -> int | retention.Pruned:
        if args.dry_run:
            return await storage.count_attempts_before(before)
        with Bars() as bars:
            return await retention.prune_all(storage, before, batch=args.batch_size, progress=bars)

    started = time.monotonic()
    result = _with_storage(args.database, work)
    if isinstance(result, int):
        print(f"{result:,} attempts were logged before {when}; nothing was deleted.")
    else:
        print(
            f"Deleted {result.attempts:,} attempts logged before {when}, with "
            f"{result.sessions:,} sessions that ended and {result.publishes:,} publishes "
            f"logged before it, in {time.monotonic() - started:.1f} s."
        )
    return 0


def cmd_seed_data(args: argparse.Namespace) -> int:
    from usher.seed import seed_database

    settings = Settings.from_env(database_url=args.database)
    with Bars() as bars:
        result = seed_database(
            settings.database_url,
            tickets=args.tickets,
            attempts_total=args.attempts,
            accounts=args.accounts,
            seed=args.seed,
            progress=bars,
        )
    summary = {
        "accounts": result.accounts,
        "tickets": result.tickets,
        "attempts": result.attempts,
        "seconds": round(result.seconds, 2),
        "attempts_per_second": round(result.attempts_per_second),
        "attempt_phase_per_second": round(result.attempts / max(result.attempt_seconds, 1e-9)),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"Loaded {result.tickets:,} tickets and {result.attempts:,} attempts into "
            f"{len(result.accounts)} new accounts in {result.seconds:.1f} s "
            f"({result.attempts_per_second:,.0f} attempts/s, indexes included)."
        )
        for account in result.accounts:
            print(f"  cdn {account['cdn']:<5} {account['username']:<10} {account['api_key']}")
        print("Their secrets are printed only with --json.")
    return 0


# -- parser ----------------------------------------------------------------------


def installed_version() -> str:
    """The version of the installed ``usher`` distribution (pyproject.toml's
    ``version``, the one place it is written)."""
    # Imported here: importlib.metadata adds about 0.1 s to every command.
    import importlib.metadata

    try:
        return importlib.metadata.version("usher")
    except importlib.metadata.PackageNotFoundError:
        # Run from a source tree that was never installed (PYTHONPATH=src).
        return "unknown (not installed; run `pip install .` to record one)"


class _VersionAction(argparse.Action):
    """``--version``: print ``usher X.Y.Z`` and exit, looking the version up
    only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help")
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"usher {installed_version()}")
        parser.exit()


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    name: str,
    help: str,  # argparse's own name for it
    description: str | None = None,
    *,
    database: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand that runs ``run``, with ``--database`` unless told otherwise."""
    parser = group.add_parser(name, help=help, description=description)
    parser.set_defaults(run=run)
    if database:
        parser.add_argument(
            "--database",
            metavar="URL",
            help="database URL (default: $USHER_DATABASE_URL or sqlite:///usher.db)",
        )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usher", description="Stream-access tickets speaking the SEVU API."
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the installed version and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(commands, cmd_serve, "serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    serve.add_argument("--demo", action="store_true", help="create (once) and print a demo account")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    account = commands.add_parser("account", help="manage accounts (tenants)")
    account_commands = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _command(account_commands, cmd_account_create, "create", help="create an account")
    create.add_argument("--username", required=True, help="prefix of the account's app names")
    create.add_argument("--cdn", type=int, help="CDN id (default: next free integer)")
    create.add_argument("--api-key", help="API key (default: 32 random letters and digits)")
    create.add_argument("--secret", help="signing secret (default: 64 random hex digits)")
    create.add_argument("--json", action="store_true", help="print one JSON object")

    listing = _command(
        account_commands, cmd_account_list, "list", help="list accounts (never their secrets)"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")

    for name, helptext, run in (
        ("rotate-secret", "replace the signing secret", cmd_account_rotate),
        ("disable", "refuse the account's API calls and tickets", _set_disabled(True)),
        ("enable", "undo disable", _set_disabled(False)),
        (
            "set-panel-password",
            "set the control-panel password (prompted, or one line of stdin)",
            cmd_account_set_panel_password,
        ),
    ):
        sub = _command(account_commands, run, name, help=helptext)
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--cdn", type=int)
        which.add_argument("--username")
        if name == "rotate-secret":
            sub.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "set-panel-password":
            sub.add_argument(
                "--clear", action="store_true", help="remove the password instead of setting one"
            )

    call = _command(
        commands,
        cmd_call,
        "call",
        help="send one signed command and print the response",
        database=False,
    )
    call.add_argument("command", help="e.g. sevu.errorcount")
    call.add_argument("fields", nargs="*", metavar="FIELD=VALUE")
    call.add_argument("--url", help="API URL (default: $USHER_URL or http://127.0.0.1:8080/api)")
    call.add_argument("--cdn", help="CDN id (default: $USHER_CDN)")
    call.add_argument("--api-key", help="API key (default: $USHER_API_KEY)")
    call.add_argument("--secret", help="signing secret (default: $USHER_SECRET)")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(db_commands, cmd_db_migrate, "migrate", help="create or migrate the schema")
    copy = _command(
        db_commands,
        cmd_db_copy,
        "copy",
        help="copy accounts, tickets and attempts to another database (resumable)",
        description="Copy accounts, tickets and the attempt log from one database to "
        "another, e.g. sqlite:///usher.db to postgresql://…. Re-running the same command "
        "continues an interrupted copy. Stop the nodes writing to the source first.",
        database=False,
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="source")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="destination")
    copy.add_argument(
        "--signatures", action="store_true", help="also copy replay-protection signatures"
    )
    copy.add_argument("--batch-size", type=int, default=5000, help="rows per transaction")
    backup = _command(
        db_commands,
        cmd_db_backup,
        "backup",
        help="copy a SQLite database to a file, safely while usher serve runs",
        description="Copy the SQLite database to FILE with SQLite's online backup API: "
        "one consistent snapshot, taken while usher serve keeps answering. The copy is a "
        "single file, checked with PRAGMA integrity_check before it is kept. For "
        "PostgreSQL use pg_dump (see docs/operations.md).",
    )
    backup.add_argument("--to", required=True, metavar="FILE", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    prune = _command(
        db_commands,
        cmd_db_prune,
        "prune",
        help="delete attempts older than a given age",
        description="Delete the attempts logged more than AGE ago, in batches, while "
        "usher serve keeps answering; sevu.errorcount then counts what remains. "
        "Safe to interrupt and to run again.",
    )
    prune.add_argument(
        "--attempts-older-than",
        required=True,
        metavar="AGE",
        help="age such as 90d, 12h or 8w (days, hours, weeks)",
    )
    prune.add_argument(
        "--batch-size", type=int, default=retention.DEFAULT_BATCH, help="attempts per transaction"
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="only count the attempts that would go"
    )

    seed = _command(
        commands,
        cmd_seed_data,
        "seed-data",
        help="fill a database with synthetic tickets and attempts (benchmarks, demos)",
        description="Bulk-load realistic synthetic data into new accounts seed1, seed2, "
        "… (SQLite). Holds the write lock until done: stop servers using the file first.",
    )
    seed.add_argument("--tickets", type=int, required=True, help="tickets to create")
    seed.add_argument("--attempts", type=int, required=True, help="attempts to log")
    seed.add_argument("--accounts", type=int, default=10, help="accounts to spread them over")
    seed.add_argument("--seed", type=int, default=1, help="random seed (keys stay random)")
    seed.add_argument("--json", action="store_true", help="print one JSON object, with secrets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except UsherError as exc:
        print(f"usher: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `usher call … | head` closed our stdout early: that is not an
        # error. Point stdout at /dev/null so the interpreter's final flush
        # does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
