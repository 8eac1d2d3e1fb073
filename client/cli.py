"""The ``gradserve`` command: ``gradserve serve`` runs a server."""

from __future__ import annotations

import argparse
import gc
import os
import sys

SECRETS = frozenset({"api_keys", "metrics_key"})
"""Settings whose value a refusal of them never shows."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a gradserve server")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="USER:KEY",
        help="accept KEY for USER (repeatable); required off loopback",
    )
    serve.add_argument(
        "--data-dir", default=None, help="snapshot sessions here and restore them at start (default: memory only)"
    )
    serve.add_argument(
        "--helpers",
        type=int,
        default=None,
        metavar="N",
        help="helper threads of the backward pass (default: the CPUs less one, at most 4; 0: none)",
    )
    serve.add_argument("--ssl-certfile", default=None, help="serve https with this certificate chain (PEM)")
    serve.add_argument("--ssl-keyfile", default=None, help="its private key (PEM), when not in the certificate file")
    levels = ("critical", "error", "warning", "info", "debug", "trace")
    serve.add_argument("--log-level", default="warning", type=str.lower, choices=levels)
    args = parser.parse_args(argv)

    try:
        import uvicorn

        from .server import Settings, create_app
        from .server.app import Server
    except ImportError as e:
        print(f"gradserve serve needs the server extra: pip install 'gradserve[server]' ({e})", file=sys.stderr)
        return 2
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    overrides: dict = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.api_key:
        overrides["api_keys"] = ",".join(args.api_key)
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.helpers is not None:
        overrides["helpers"] = args.helpers
    for name in ("ssl_certfile", "ssl_keyfile"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        flags = {a.dest: a.option_strings[0] for a in serve._actions if a.option_strings}
        flags["api_keys"] = "--api-key"  # (a flag per key, the setting all of them)
        for err in e.errors():
            loc = [str(p) for p in err["loc"]]
            secret = bool(loc) and loc[0] in SECRETS
            name = loc[0] if secret else ".".join(loc)  # (a mapping's place past its name is a key)
            flag = f"{flags[name]} or " if name in flags else ""
            where = f"{name} ({flag}GRADSERVE_{name.upper()}): " if name else ""
            # the value said what was wrong with it, but not a secret's: a bad entry of the API
            # keys printed all of them, every other user's key with it
            got = f", got {err['input']!r}" if name and "input" in err and not secret else ""
            print(f"gradserve serve: {where}{err['msg']}{got}", file=sys.stderr)
        return 2
    except SettingsError as e:  # a GRADSERVE_* variable that does not parse
        print(f"gradserve serve: {e}", file=sys.stderr)
        return 2
    if settings.data_dir is not None:  # (said here in one line; the server takes it when it starts)
        from .server.store import DataDirError, lock_data_dir

        try:
            os.close(lock_data_dir(settings.data_dir / "sessions"))
        except DataDirError as e:
            print(f"gradserve serve: {e}", file=sys.stderr)
            return 2
    # The engine allocates many short-lived, acyclic objects per op (specs, nodes, dicts); the
    # cyclic collector's default pace spent about a sixth of the per-op time scanning them.
    # This process is ours, so it collects less often, and not the objects of its start-up.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # one access-log line per request is formatted even when the level hides it, and the
        # proxy-headers middleware rewrites a client address the server never uses: together
        # about a sixth of uvicorn's own time per small request
        access_log=args.log_level.lower() in ("debug", "trace", "info"),
        proxy_headers=False,
        http="httptools",
        loop="auto",  # uvloop where it is installed (uvicorn[standard] leaves it out on Windows)
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
    )
    try:
        Server(config).run()
    except KeyboardInterrupt:  # (uvicorn raises Ctrl-C again once it has stopped: as uvicorn.run, no traceback)
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
