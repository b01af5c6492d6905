"""The workbench (工作台, /console): staff accounts' pages and their JSON API.

Each module brings its routes: auth (setup, login, sessions, the account's chats), queue (the
list of requests and live updates), request (one request: history, attachments, actions) and
dashboard (the leaders' figures and downloads)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from bot.console import auth, dashboard, queue, request


def routes() -> list[BaseRoute]:
    """Every route of the console."""
    return [*auth.ROUTES, *queue.ROUTES, *request.ROUTES, *dashboard.ROUTES]
