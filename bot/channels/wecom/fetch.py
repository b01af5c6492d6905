"""Downloading what a member sent (a picture, a voice message) with media/get before WeCom
forgets it (three days)."""

from __future__ import annotations

import logging
import re

import requests

from bot import media
from bot.channels.base import TransientSendError
from bot.channels.wecom.client import ERR_FREQUENCY, ERR_SYSTEM_BUSY, ApiError, get_client
from bot.media import MEDIA_GONE
from storage.models import Attachment
from storage.settings import Settings

logger = logging.getLogger(__name__)

#: The file name in a Content-Disposition header (media/get names its files).
_FILENAME = re.compile(r'filename="?([^";]+)"?')


def fetch_media(settings: Settings, attachment: Attachment) -> str:
    """Downloads one attachment into REDESK_MEDIA_DIR; its stored path, or MEDIA_GONE.

    Raises:
        TransientSendError: WeCom could not be reached (try again later).
    """
    try:
        response = get_client(settings).call(
            "GET", "media/get", raw=True, params={"media_id": attachment.file_id}
        )
    except ApiError as exc:
        if exc.errcode in (None, ERR_SYSTEM_BUSY, ERR_FREQUENCY):
            raise TransientSendError(f"WeCom media: {exc.errmsg}") from None
        logger.warning("WeCom media of attachment %s is gone (%s)", attachment.id, exc.errcode)
        return MEDIA_GONE
    except requests.RequestException as exc:
        raise TransientSendError(f"WeCom media: {type(exc).__name__}") from None
    if not isinstance(response, requests.Response):
        return MEDIA_GONE
    kind = response.headers.get("Content-Type", "").split(";")[0].strip()
    named = _FILENAME.search(response.headers.get("Content-Disposition", ""))
    return media.store(
        settings.media_dir,
        attachment,
        response.content,
        kind,
        file_name=named.group(1) if named else None,
    )
