"""Where fetched media files are kept: REDESK_MEDIA_DIR/<channel>/<YYYYMM>/<attachment id>.<ext>.

Platforms keep files only for a while (WeChat three days; Telegram file ids stay valid, but a
download link only for an hour), so pictures, voice and video are copied here once received.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from storage.models import Attachment, utcnow

#: attachments.stored_path of media the platform would no longer give (expired, unknown).
MEDIA_GONE = ""


def store(media_dir: Path, attachment: Attachment, content: bytes, content_type: str) -> str:
    """Writes one attachment's bytes (atomically: a partial file is never seen).

    Returns:
        The path relative to `media_dir`, for attachments.stored_path.
    """
    month = (attachment.created_at or utcnow()).strftime("%Y%m")
    extension = mimetypes.guess_extension(content_type) or ".bin"
    relative = Path(attachment.channel) / month / f"{attachment.id}{extension}"
    target = Path(media_dir) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(content)
    partial.replace(target)
    return str(relative)
