"""wechatpy's WeCom client (wechatpy.enterprise) on REDESK_WECOM_API_URL: an access token from
gettoken, shared by every process (in Redis when there is one) and refreshed by one at a time;
a refused token (40014, 42001, 40001 on a call) is answered by one refresh and one retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from wechatpy.enterprise import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.memorystorage import MemoryStorage
from wechatpy.session.redisstorage import RedisStorage

from bot.channels.wecom.settings import wecom_settings
from storage.settings import Settings

logger = logging.getLogger(__name__)


#: WeCom error codes redesk acts on.
ERR_SYSTEM_BUSY = -1
ERR_INVALID_SECRET = 40001
ERR_INVALID_CORP = 40013
ERR_INVALID_TOKEN = 40014
ERR_TOKEN_EXPIRED = 42001
ERR_FREQUENCY = 45009
ERR_INVALID_MEDIA = 40007
ERR_NOBODY_VALID = 81013
ERR_NO_SUCH_USER = 60111
ERR_NOT_IN_APP = 60020

#: A call's token was refused: fetched again once (wechatpy's refresh-and-retry codes).
TOKEN_ERRORS: frozenset[int] = frozenset({ERR_INVALID_SECRET, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED})

#: Seconds to wait for one API answer.
TIMEOUT = 10

#: Seconds to wait for user/get while a callback waits to be answered (WeCom waits 5 s).
NAME_TIMEOUT = 2

#: Prefix of the Redis keys of the shared token and of its refresh lock.
TOKEN_PREFIX = "redesk:wecom:token:"


class ApiError(WeChatClientException):  # type: ignore[misc]
    """WeCom answered an errcode (`errcode` None: no JSON answer, e.g. an HTTP 5xx)."""

    def __init__(
        self, errcode: int | None, errmsg: str, answer: dict[str, Any] | None = None
    ) -> None:
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg
        self.answer = answer or {}

    def __str__(self) -> str:
        return f"WeCom {self.errcode}: {self.errmsg}"


class WeComClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's WeCom client for one corp's app, on REDESK_WECOM_API_URL.

    wechatpy refreshes the token when WeCom answers 40001/40014/42001 and retries. Several
    threads or processes seeing the same stale token would each fetch a new one; here a refresh
    happens under a lock (in Redis when there is one), a caller that finds a newer token than
    the one it used takes that one, and a call is retried once only. Every error WeCom answers
    (and an HTTP error status) is an ApiError; a network error stays a requests exception.
    """

    def __init__(self, settings: Settings) -> None:
        own = wecom_settings(settings)
        session, self._lock = _token_store(settings.redis_url)
        self.agent_id = own.agent_id or 0
        super().__init__(
            own.corp_id or "", own.secret or "", session=session, timeout=TIMEOUT, auto_retry=True
        )
        self.API_BASE_URL = f"{own.api_url}/cgi-bin/"
        self._token_url = f"{own.api_url}/cgi-bin/gettoken"
        self._local = threading.local()

    @property
    def access_token_key(self) -> str:
        """The token's key in the store (wechatpy's would carry part of the Secret)."""
        return f"{self.corp_id}:{self.agent_id}"

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
        """Fetches a new token with gettoken unless another thread or process has just done it.

        Raises:
            ApiError: gettoken refused the corp id or the Secret, or gave no token.
            requests.RequestException: WeCom could not be reached.
        """
        used = getattr(self._local, "used", None)
        with self._lock():
            current = self.session.get(self.access_token_key)
            if current and current != used:
                self._local.used = current
                return {"access_token": current}
            response = self._http.get(
                self._token_url,
                timeout=TIMEOUT,
                params={"corpid": self.corp_id, "corpsecret": self.secret},
            )
            try:
                result = response.json()
            except ValueError:
                raise ApiError(None, f"gettoken: HTTP {response.status_code}") from None
            if not isinstance(result, dict):
                raise ApiError(None, f"gettoken: HTTP {response.status_code}: not an object")
            code = int(result.get("errcode") or 0)
            if code:
                raise ApiError(code, str(result.get("errmsg") or ""), result)
            token = result.get("access_token")
            if not isinstance(token, str) or not token:
                raise ApiError(None, "gettoken answered no access_token")
            expires_in = int(result.get("expires_in") or 7200)
            # Kept a minute less than WeCom's lifetime, so it is replaced before it expires.
            self.session.set(self.access_token_key, token, max(expires_in - 60, 60))
            self._local.used = token
            return result

    def fetch_token(self, used: str | None = None) -> str:
        """A fresh token, unless another thread or process replaced `used` meanwhile (with
        no `used`: the shared one, fetched when there is none).

        Raises:
            ApiError: gettoken refused the corp id or the Secret.
            requests.RequestException: WeCom could not be reached.
        """
        self._local.used = used
        self.fetch_access_token()
        return str(self.session.get(self.access_token_key))

    def token(self) -> str:
        """The shared token (fetched when there is none)."""
        return self.access_token

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        raw: bool = False,
        timeout: float = TIMEOUT,
    ) -> Any:
        """One API call through wechatpy's `get`/`post` (for what its API classes lack, e.g.
        message/update_template_card); a refused token is fetched again once.

        Returns:
            The JSON answer (errcode 0), or the requests.Response when `raw` and the answer is
            not JSON (media/get's file).

        Raises:
            ApiError, requests.RequestException.
        """
        kwargs: dict[str, Any] = {"params": dict(params or {}), "timeout": timeout}
        if body is not None:
            kwargs["data"] = body
        self._local.raw = raw
        try:
            if method.upper() == "GET":
                return self.get(path, **kwargs)
            return self.post(path, **kwargs)
        finally:
            self._local.raw = False

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """wechatpy's request, counted (its retry after a refresh happens once), with its
        HTTP errors as ApiError."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            return super()._request(method, url_or_endpoint, **kwargs)
        except ApiError:
            raise
        except WeChatClientException as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            raise ApiError(exc.errcode, f"HTTP {status}" if status else str(exc)) from None
        finally:
            self._local.depth = depth

    def _decode_result(self, res: requests.Response) -> Any:
        """The JSON answer; a raw call's non-JSON answer (a file) is the response itself."""
        kind = res.headers.get("Content-Type", "")
        if getattr(self._local, "raw", False) and res.ok and "json" not in kind:
            return res
        return super()._decode_result(res)

    def _handle_result(
        self,
        res: Any,
        method: str | None = None,
        url: str | None = None,
        result_processor: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The answer when its errcode is 0; a refused token on the first try goes to
        wechatpy's refresh and retry, anything else WeCom refuses is an ApiError."""
        result = res if isinstance(res, dict) else self._decode_result(res)
        if not isinstance(result, dict):
            if getattr(self._local, "raw", False) and isinstance(result, requests.Response):
                return result
            status = getattr(res, "status_code", "?")
            raise ApiError(None, f"HTTP {status}: not JSON")
        code = int(result.get("errcode") or 0)
        if code in TOKEN_ERRORS and getattr(self._local, "depth", 0) <= 1:
            logger.info("WeCom refused the access token (%s); fetching a new one", code)
            return super()._handle_result(result, method, url, result_processor, **kwargs)
        if code:
            raise ApiError(code, str(result.get("errmsg") or ""), result)
        return result if result_processor is None else result_processor(result)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()


def _token_store(redis_url: str | None) -> tuple[Any, Callable[[], Any]]:
    """wechatpy's session storage for the token and the lock of its refresh: in Redis when
    configured (shared by every process), else in this process."""
    if redis_url:
        import redis

        shared = redis.Redis.from_url(redis_url, socket_timeout=5)
        storage: Any = _SharedStorage(shared, prefix=TOKEN_PREFIX.rstrip(":"))

        def lock() -> Any:
            return shared.lock(f"{TOKEN_PREFIX}lock", timeout=30, blocking_timeout=30)

        return storage, lock
    local = threading.Lock()

    def thread_lock() -> Any:
        return _thread_lock(local)

    return _ExpiringMemory(), thread_lock


class _SharedStorage(RedisStorage):  # type: ignore[misc]
    """wechatpy's Redis storage; a value that is not its JSON (a token stored bare, as redesk
    did before) counts as none, so it is fetched again and stored over."""

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return super().get(key, default)
        except ValueError:
            return default


class _ExpiringMemory(MemoryStorage):  # type: ignore[misc]
    """wechatpy's memory storage, with its `ttl` kept (wechatpy's ignores it)."""

    def __init__(self) -> None:
        super().__init__()
        self._expiry: dict[str, float] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if self._expiry.get(key, float("inf")) <= time.monotonic():
            self.delete(key)
            return default
        return super().get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        super().set(key, value, ttl)
        if ttl:
            self._expiry[key] = time.monotonic() + ttl
        else:
            self._expiry.pop(key, None)

    def delete(self, key: str) -> None:
        super().delete(key)
        self._expiry.pop(key, None)


@contextmanager
def _thread_lock(lock: threading.Lock) -> Iterator[None]:
    with lock:
        yield


_clients: dict[tuple[Any, ...], WeComClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> WeComClient:
    """This process's client for the configured app (made once)."""
    own = wecom_settings(settings)
    key = (own.corp_id, own.agent_id, own.secret, own.api_url, settings.redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = WeComClient(settings)
            _clients[key] = client
        return client


def close_clients() -> None:
    """Forgets the clients (tests, shutdown)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
