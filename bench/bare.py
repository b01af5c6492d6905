"""The ingest baseline: a bare Starlette app in the same uvicorn configuration as `redesk run`.

POST /telegram/webhook reads the body and answers {"ok": true}, and POST /wechat reads the body
and answers "success" (what WeChat expects), behind the same security headers middleware, served
by `uvicorn.Server(uvicorn.Config(app, host, port, log_level="warning"))` like
admin_scripts/cli.py `run`: one process, the same event loop and HTTP implementation. The
difference to redesk's endpoints is the work the endpoint does.

Run as `python -m bench.bare --port N`.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.app import SecurityHeaders


async def webhook(request: Request) -> Response:
    """Reads the body, answers 200."""
    await request.body()
    return JSONResponse({"ok": True})


async def wechat(request: Request) -> Response:
    """Reads the body, answers "success"."""
    await request.body()
    return PlainTextResponse("success")


async def healthz(request: Request) -> Response:
    """Answers 200."""
    return JSONResponse({"status": "ok"})


def main() -> None:
    """Serves the bare app."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(
        routes=[
            Route("/telegram/webhook", webhook, methods=["POST"]),
            Route("/wechat", wechat, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        middleware=[Middleware(SecurityHeaders)],
    )
    print(f"bare app on 127.0.0.1:{args.port}", flush=True)
    uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=30
        )
    ).run()


if __name__ == "__main__":
    main()
