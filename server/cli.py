"""The ``tympan`` command: ``serve``, ``keys create|list|revoke``, and the client commands
``analyze`` and ``stream``.

Flags override ``TYMPAN_*`` environment variables, which override defaults; everything is read
once into ``Settings`` before anything starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from protocol.cli import add_client_commands, run_client_command
from server.config import ConfigError, Settings
from server.keys import generate_key, hash_key
from server.store import Store, StoreError

__all__ = ["main"]

DEFAULT_KEY_NAME = "default"


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="data directory (default ./var, TYMPAN_DATA_DIR)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tympan", description="Self-hosted sound-event inference server"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, TYMPAN_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8080, TYMPAN_PORT)")
    serve.add_argument("--provider", help="force an execution provider: CPU, CUDA or Tensorrt")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    serve.add_argument(
        "--no-bootstrap-key", action="store_true", help="do not create a key when none exists"
    )
    _add_data_dir(serve)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    _add_data_dir(create)
    listing = key_commands.add_parser("list", help="list keys (names only; keys are stored hashed)")
    _add_data_dir(listing)
    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
    _add_data_dir(revoke)
    add_client_commands(commands)
    return parser


def _open_store(settings: Settings) -> Store:
    return Store(settings.db_path, fsync=settings.fsync)


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        if args.keys_command == "create":
            key = generate_key()
            store.add_key(args.name, hash_key(key))
            print(key)
        elif args.keys_command == "list":
            for record in store.list_keys():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created_at))
                status = "revoked" if record.revoked_at is not None else "active"
                print(f"{record.name}\t{status}\tcreated {created} UTC")
        elif args.keys_command == "revoke":
            if not store.revoke_key(args.name):
                print(f"error: no active key named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.name}")
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _bootstrap_key(settings: Settings) -> None:
    """First start: create a key so the server is usable, and show it this one time."""
    store = _open_store(settings)
    try:
        if store.count_active_keys() == 0:
            key = generate_key()
            name = DEFAULT_KEY_NAME
            suffix = 1
            while any(r.name == name for r in store.list_keys()):
                suffix += 1
                name = f"{DEFAULT_KEY_NAME}-{suffix}"
            store.add_key(name, hash_key(key))
            print(
                f"Created API key {name!r} (shown only once, store it now):\n\n    {key}\n",
                flush=True,
            )
    finally:
        store.close()


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from models.yamnet.fetch import ModelFilesError, verify_weights
    from server.app import create_app
    from server.serve import run_server

    model_dir = settings.model_dir
    try:
        if model_dir is None:
            verify_weights()
    except ModelFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.no_bootstrap_key:
        _bootstrap_key(settings)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    run_server(create_app(settings), settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "client_command", None):
        return run_client_command(args)  # a client: no server settings involved
    try:
        settings = Settings.from_env(
            data_dir=getattr(args, "data_dir", None),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            provider=getattr(args, "provider", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "keys":
        return _keys(args, settings)
    return _serve(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
