"""The official account's custom menu: its CLICK keys, and the `redesk wechat menu` verb that
creates it.
"""

from __future__ import annotations

from typing import Any

import typer
from wechatpy.exceptions import WeChatClientException

from bot.channels.base import CommandFailed
from storage.settings import get_settings

#: The custom menu's CLICK keys -> what a click means.
MENU_REPORT = "REDESK_REPORT"
MENU_MINE = "REDESK_MINE"
MENU_HELP = "REDESK_HELP"

#: The menu `redesk wechat menu` creates.
MENU: dict[str, Any] = {
    "button": [
        {"type": "click", "name": "我要反映", "key": MENU_REPORT},
        {"type": "click", "name": "我的诉求", "key": MENU_MINE},
        {"type": "click", "name": "帮助", "key": MENU_HELP},
    ]
}


def commands() -> typer.Typer:
    """`redesk wechat ...`: the official account's verbs."""
    app = typer.Typer(help="The WeChat official account.", no_args_is_help=True)

    @app.command("menu")
    def menu() -> None:
        """Create the official account's custom menu: 我要反映, 我的诉求, 帮助.

        Needs REDESK_WECHAT_APP_ID, REDESK_WECHAT_APP_SECRET and REDESK_WECHAT_TOKEN.

        Example: redesk wechat menu
        """
        from bot.channels.wechat.client import get_client
        from bot.channels.wechat.settings import wechat_settings

        settings = get_settings()
        if not wechat_settings(settings).enabled:
            raise CommandFailed(
                "WeChat is off: set REDESK_WECHAT_APP_ID, "
                "REDESK_WECHAT_APP_SECRET and REDESK_WECHAT_TOKEN",
                CommandFailed.CONFIG,
            )
        try:
            get_client(settings).menu.create(MENU)
        except WeChatClientException as exc:
            raise CommandFailed(
                f"WeChat refused the menu: {exc.errcode} {exc.errmsg}", CommandFailed.FAILURE
            ) from None
        except Exception as exc:  # a network failure, explained in one line
            raise CommandFailed(
                f"WeChat at REDESK_WECHAT_API_URL could not be reached ({exc})",
                CommandFailed.UNAVAILABLE,
            ) from None
        names = " / ".join(button["name"] for button in MENU["button"])
        typer.echo(f"menu created: {names}")

    return app
