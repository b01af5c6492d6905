"""Downloading Telegram attachments (getFile, then the file) into REDESK_MEDIA_DIR."""

from __future__ import annotations

import logging
import mimetypes

from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    TimedOut,
)

from bot import media
from bot.channels.base import TransientSendError
from bot.channels.telegram.client import get_client
from bot.media import MEDIA_GONE
from storage.models import Attachment
from storage.settings import Settings

logger = logging.getLogger(__name__)


# --- media ----------------------------------------------------------------------------------


def fetch_media(settings: Settings, attachment: Attachment) -> str:
    """Downloads one attachment (getFile, then the file) into REDESK_MEDIA_DIR.

    Returns:
        Its stored path, or MEDIA_GONE when Telegram will not give it (unknown, too big).

    Raises:
        TransientSendError: Telegram could not be reached (try again later).
    """
    client = get_client(settings)

    async def download() -> tuple[bytes, str, str]:
        found = await client.bot.get_file(str(attachment.file_id))
        content = bytes(await found.download_as_bytearray())
        kind = attachment.mime_type or mimetypes.guess_type(found.file_path or "")[0] or ""
        return content, kind, found.file_path or ""

    try:
        content, kind, path = client.run(download())
    except (BadRequest, Forbidden, InvalidToken) as exc:
        logger.warning("Telegram media of attachment %s is gone (%s)", attachment.id, exc)
        return MEDIA_GONE
    except (TimedOut, NetworkError) as exc:
        raise TransientSendError(f"Telegram media: {type(exc).__name__}") from None
    return media.store(
        settings.media_dir,
        attachment,
        content,
        kind or _KIND_TYPES.get(attachment.kind, "application/octet-stream"),
        file_name=path.rsplit("/", 1)[-1],
    )


#: A content type for an attachment kind when Telegram does not say.
_KIND_TYPES: dict[str, str] = {
    "photo": "image/jpeg",
    "live_photo": "video/mp4",
    "voice": "audio/ogg",
    "video": "video/mp4",
    "video_note": "video/mp4",
    "animation": "video/mp4",
    "audio": "audio/mpeg",
}
