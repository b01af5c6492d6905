"""Fetching WeChat media (media/get) before WeChat forgets them (three days)."""

from __future__ import annotations

import logging
import re

import requests
from wechatpy.exceptions import WeChatClientException

from bot import media
from bot.channels.base import TransientSendError
from bot.channels.wechat.client import ERR_FREQUENCY, ERR_SYSTEM_BUSY, get_client
from bot.media import MEDIA_GONE
from storage.models import Attachment
from storage.settings import Settings

logger = logging.getLogger(__name__)


# --- media ----------------------------------------------------------------------------------


def fetch_media(settings: Settings, attachment: Attachment) -> str:
    """Downloads one attachment into REDESK_MEDIA_DIR; its stored path, or MEDIA_GONE.

    Raises:
        TransientSendError: WeChat could not be reached (try again later).
    """
    try:
        response = get_client(settings).media.download(attachment.file_id)
    except WeChatClientException as exc:
        if exc.errcode in (None, ERR_SYSTEM_BUSY, ERR_FREQUENCY):
            raise TransientSendError(f"WeChat media: {exc.errmsg}") from None
        logger.warning("WeChat media of attachment %s is gone (%s)", attachment.id, exc.errcode)
        return MEDIA_GONE
    except requests.RequestException as exc:
        raise TransientSendError(f"WeChat media: {type(exc).__name__}") from None
    if isinstance(response, dict):
        # A video: WeChat answers with a URL to download it from.
        url = response.get("video_url")
        if not isinstance(url, str) or not url:
            return MEDIA_GONE
        try:
            response = requests.get(url, timeout=60)
        except requests.RequestException as exc:
            raise TransientSendError(f"WeChat video: {type(exc).__name__}") from None
    kind = response.headers.get("Content-Type", "").split(";")[0].strip()
    if response.status_code >= 500:
        raise TransientSendError(f"WeChat media: HTTP {response.status_code}")
    if response.status_code != 200 or kind in ("application/json", "text/plain"):
        logger.warning("WeChat media of attachment %s is gone", attachment.id)
        return MEDIA_GONE
    named = _FILENAME.search(response.headers.get("Content-Disposition", ""))
    return media.store(
        settings.media_dir,
        attachment,
        response.content,
        kind,
        file_name=named.group(1) if named else None,
    )


#: The file name in a Content-Disposition header (media/get names its files).
_FILENAME = re.compile(r'filename="?([^";]+)"?')
