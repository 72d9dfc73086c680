"""Run the platform on one machine: `python -m gateway` (what `fn up` starts).

Starts the parts (embedded Postgres unless DATABASE_URL), serves HTTP, writes the gateway's
address to `<state_dir>/gateway.json` for the CLI, and on SIGINT/SIGTERM stops accepting, ends
the activation streams (`fn logs --follow`, the dashboard's: their clients are told), lets
in-flight calls finish (up to `shutdown_timeout_s`), then stops instances and Postgres. A second
signal forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import orjson
from aiohttp import web

from config.units import ConfigError
from gateway.app import build_app, build_dashboard_app
from gateway.connections import GatewayRunner
from gateway.platform import Platform
from gateway.settings import Settings
from gateway.state_dir import ADDRESS_FILE, StateDirInUse
from scheduler.logs import configure_logging
from scheduler.scheduler import StartFailed
from store import StoreError

log = logging.getLogger("ember.gateway")
BACKLOG = 1024  # connections the kernel queues before accept: a burst of clients is not refused


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started: list[Platform] = []

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting now")
            for platform in started:  # its embedded Postgres must not outlive it
                if platform.embedded is not None:
                    platform.embedded.stop_now()
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    platform = await Platform.start(settings)
    started.append(platform)
    runner = GatewayRunner(
        build_app(platform), settings.http, shutdown_timeout=settings.shutdown_timeout_s
    )
    dashboard_runner = GatewayRunner(  # (the same HTTP limits as the gateway's port)
        build_dashboard_app(platform),
        settings.dashboard_http(),
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    address_file = settings.state_dir / ADDRESS_FILE
    try:
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            reuse_address=True,
            reuse_port=settings.reuse_port or None,
            backlog=BACKLOG,
        )
        await site.start()
        host, port = runner.addresses[0][:2]
        platform.served["calls"] = port
        wildcard = host in ("0.0.0.0", "")
        url = f"http://{'127.0.0.1' if wildcard else host}:{port}"
        try:
            await dashboard_runner.setup()
            await web.TCPSite(
                dashboard_runner,
                settings.host,
                settings.dashboard_bind_port(),
                reuse_address=True,
                reuse_port=settings.reuse_port or None,
            ).start()
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve the dashboard on port {settings.dashboard_bind_port()} "
                f"(FN_DASHBOARD_PORT; 0 picks a free one): {exc.strerror}",
            ) from None
        platform.served["dashboard"] = dashboard_runner.addresses[0][1]
        dashboard = url.rsplit(":", 1)[0] + f":{platform.served['dashboard']}/ui"
        address_file.write_bytes(
            orjson.dumps({"url": url, "dashboard": dashboard, "pid": os.getpid()})
        )
        if wildcard and settings.routing.enabled and not settings.routing.advertise_url:
            log.warning(
                "gateways on other hosts cannot send calls to %s; set EMBER_GATEWAY_URL to "
                "an address they reach (docs/kubernetes.md, Scaling gateways)",
                url,
            )
        await platform.router.advertise(settings.routing.advertise_url or url)
        database = "embedded" if platform.embedded else "DATABASE_URL"
        log.info(
            "ember is up",
            extra={"url": url, "database": database, "state_dir": str(settings.state_dir)},
        )
        isolation = platform.isolation_summary()
        if isolation:
            print(isolation, file=sys.stderr, flush=True)
        print(
            f"Ember is up at {url} (database: {database}; state: {settings.state_dir}); "
            f"dashboard: {dashboard}",
            file=sys.stderr,
            flush=True,
        )
        stopped = asyncio.create_task(stop.wait(), name="stop signal")
        broken = asyncio.create_task(platform.wait_broken(), name="platform watch")
        await asyncio.wait([stopped, broken], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        broken.cancel()
        if not stop.is_set():
            log.error("stopping: %s", broken.result())
            raise SystemExit(1)
        log.info("shutting down")
    finally:
        address_file.unlink(missing_ok=True)
        platform.stopping.set()
        await platform.router.withdraw(linger=True)  # peers send no more calls here
        await dashboard_runner.cleanup()
        await runner.cleanup()
        await platform.stop()
        log.info("stopped")


def main() -> None:
    configure_logging()
    try:
        settings = Settings.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"fn up: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        import uvloop

        uvloop.run(serve(settings))
    except (StoreError, StartFailed, StateDirInUse) as exc:
        print(f"fn up: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        print(f"fn up: cannot serve on {where}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None
