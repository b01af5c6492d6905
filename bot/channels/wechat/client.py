"""wechatpy's client on REDESK_WECHAT_API_URL, its access token shared by every process (in Redis
when there is one) and refreshed by one at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.memorystorage import MemoryStorage

from bot.channels.callbacks import close_redis_clients
from bot.channels.wechat.settings import wechat_settings
from storage.settings import Settings

logger = logging.getLogger(__name__)


#: WeChat error codes.
ERR_SYSTEM_BUSY = -1
ERR_INVALID_OPENID = 40003
ERR_INVALID_MEDIA = 40007
ERR_REQUIRE_SUBSCRIBE = 43004
ERR_FREQUENCY = 45009
ERR_OUT_OF_TIME = 45015
ERR_OUT_OF_COUNT = 45047


#: Seconds to wait for WeChat's token endpoint.
TOKEN_TIMEOUT = 10

#: Where WeChat's own servers show a QR code's image (not under api.weixin.qq.com).
SHOW_QRCODE_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode"
#: The API base of WeChat's own servers (REDESK_WECHAT_API_URL's default).
WECHAT_API_URL = "https://api.weixin.qq.com"

#: Refreshes of the token for one call before giving up.
MAX_TOKEN_RETRIES = 2


class RedeskWeChatClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client on REDESK_WECHAT_API_URL, with one token refresh at a time.

    wechatpy refreshes the token when WeChat answers 40001/42001 and retries once. Several
    threads or processes seeing the same stale token would each fetch a new one, and each
    fetch invalidates the last (a storm); here a refresh happens under a lock (in Redis when
    there is one), and a caller that finds a newer token than the one it used takes that one.
    """

    def __init__(self, settings: Settings, session: Any, lock: Callable[[], Any]) -> None:
        own = wechat_settings(settings)
        super().__init__(own.app_id, own.app_secret, session=session, timeout=10, auto_retry=True)
        self.API_BASE_URL = f"{own.api_url}/cgi-bin/"
        self._token_url = f"{own.api_url}/cgi-bin/token"
        # WeChat shows QR codes on mp.weixin.qq.com; any other API base (a proxy, the fake)
        # serves them too, so that every call goes where REDESK_WECHAT_API_URL says.
        self._show_qrcode_url = (
            SHOW_QRCODE_URL
            if own.api_url == WECHAT_API_URL
            else f"{own.api_url}/cgi-bin/showqrcode"
        )
        self._lock = lock
        self._local = threading.local()

    @property
    def access_token(self) -> str:
        """The shared token (fetched when there is none); remembered as the one this thread
        used, so that a refresh can tell whether someone else already replaced it."""
        token = self.session.get(self.access_token_key)
        if not token:
            self.fetch_access_token()
            token = self.session.get(self.access_token_key)
        self._local.used = token
        return str(token)

    def fetch_access_token(self) -> dict[str, Any]:
        """Fetches a new token unless another thread or process has just done it."""
        used = getattr(self._local, "used", None)
        with self._lock():
            current = self.session.get(self.access_token_key)
            if current and current != used:
                return {"access_token": current}
            response = self._http.get(
                self._token_url,
                timeout=TOKEN_TIMEOUT,
                params={
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret,
                },
            )
            try:
                result: dict[str, Any] = response.json()
            except ValueError:
                raise WeChatClientException(
                    None, f"token: HTTP {response.status_code}", client=self, response=response
                ) from None
            if result.get("errcode"):
                raise WeChatClientException(
                    result["errcode"], result.get("errmsg"), client=self, response=response
                )
            token = result.get("access_token")
            if not isinstance(token, str) or not token:
                raise WeChatClientException(
                    None, "token: no access_token", client=self, response=response
                )
            expires_in = int(result.get("expires_in") or 7200)
            # Kept a minute less than WeChat's lifetime, so it is replaced before it expires.
            self.session.set(self.access_token_key, token, max(expires_in - 60, 60))
            self._local.used = token
            return result

    def permanent_qrcode(self, scene: str) -> dict[str, Any]:
        """Asks for a permanent QR code whose scan brings `scene` (qrcode/create with
        QR_LIMIT_STR_SCENE): subscribing through it sends EventKey ``qrscene_<scene>``, a
        follower's scan sends ``<scene>``. The same scene gives the same code again.

        Returns:
            WeChat's answer: ``ticket`` (for showqrcode) and ``url`` (what the code encodes).

        Raises:
            WeChatClientException: WeChat answered an error, or no ticket.
        """
        result: dict[str, Any] = self.qrcode.create(
            {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene}}}
        )
        if not isinstance(result.get("ticket"), str) or not result["ticket"]:
            raise WeChatClientException(None, "qrcode/create: no ticket", client=self)
        return result

    def qrcode_image(self, ticket: str) -> bytes:
        """The image of a QR code (showqrcode?ticket=...; no access token needed).

        Raises:
            WeChatClientException: WeChat did not answer with an image.
        """
        response = self._http.get(
            self._show_qrcode_url, params={"ticket": ticket}, timeout=self.timeout
        )
        kind = response.headers.get("Content-Type", "")
        if response.status_code != 200 or not kind.startswith("image/"):
            errcode = None
            if "json" in kind or "text" in kind:
                try:
                    errcode = response.json().get("errcode")
                except ValueError:
                    errcode = None
            raise WeChatClientException(
                errcode,
                f"showqrcode: HTTP {response.status_code} {kind or 'without a type'}",
                client=self,
                response=response,
            )
        return bytes(response.content)

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """wechatpy's request; its refresh-and-retry on 40001/42001 is bounded here (it would
        recurse for ever if WeChat kept refusing fresh tokens)."""
        depth = getattr(self._local, "depth", 0)
        if depth > MAX_TOKEN_RETRIES:
            raise WeChatClientException(40001, "access_token refused after refreshing", client=self)
        self._local.depth = depth + 1
        try:
            return super()._request(method, url_or_endpoint, **kwargs)
        finally:
            self._local.depth = depth


@contextmanager
def _thread_lock(lock: threading.Lock) -> Iterator[None]:
    with lock:
        yield


_clients: dict[tuple[Any, ...], RedeskWeChatClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> RedeskWeChatClient:
    """This process's client for the configured account (made once)."""
    own = wechat_settings(settings)
    key = (own.app_id, own.api_url, settings.redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if settings.redis_url:
                import redis
                from wechatpy.session.redisstorage import RedisStorage

                shared = redis.Redis.from_url(settings.redis_url)
                storage: Any = RedisStorage(shared, prefix="redesk:wechat")

                def lock() -> Any:
                    return shared.lock("redesk:wechat:token-lock", timeout=30, blocking_timeout=30)
            else:
                storage = MemoryStorage()
                local = threading.Lock()

                def lock() -> Any:
                    return _thread_lock(local)

            client = RedeskWeChatClient(settings, storage, lock)
            _clients[key] = client
        return client


def close_clients() -> None:
    """Forgets the clients, the API's and those of the nonce memory (tests, shutdown)."""
    with _clients_lock:
        _clients.clear()
    close_redis_clients()
