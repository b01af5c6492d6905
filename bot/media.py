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

#: Extensions of the content types the platforms send that Python's mimetypes does not know
#: (WeChat voice is AMR, Speex or MP3) or names oddly (".jpe" for JPEG on some systems).
EXTENSIONS: dict[str, str] = {
    "audio/amr": ".amr",
    "audio/amr-wb": ".awb",
    "audio/speex": ".speex",
    "audio/x-speex": ".speex",
    "voice/speex": ".speex",
    "audio/silk": ".silk",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "application/pdf": ".pdf",
}

#: Content types that say nothing about the file (the next hint is tried instead).
_VAGUE_TYPES: frozenset[str] = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def extension_for(content_type: str, *names: str | None, fallback_type: str | None = None) -> str:
    """The file extension for fetched bytes, from the best hint there is.

    Args:
        content_type: The Content-Type the platform answered the download with.
        *names: File names the platform gave (Content-Disposition, the sender's file name);
            a name's extension is used when the content type is vague.
        fallback_type: The type the message itself declared (e.g. WeChat voice Format).

    Returns:
        An extension with its dot; ".bin" when nothing says what the file is.
    """
    for kind in (content_type, fallback_type or ""):
        kind = kind.split(";")[0].strip().lower()
        if kind in _VAGUE_TYPES:
            continue
        found = EXTENSIONS.get(kind) or mimetypes.guess_extension(kind)
        if found:
            return found
    for name in names:
        suffix = Path(name or "").suffix.lower()
        if 1 < len(suffix) <= 8 and suffix[1:].isalnum():
            return suffix
    return ".bin"


def store(
    media_dir: Path,
    attachment: Attachment,
    content: bytes,
    content_type: str,
    file_name: str | None = None,
) -> str:
    """Writes one attachment's bytes (atomically: a partial file is never seen).

    Args:
        media_dir: REDESK_MEDIA_DIR.
        attachment: The attachment the bytes are of.
        content: The bytes.
        content_type: The Content-Type the platform answered with.
        file_name: The file name the platform gave with the download, if any.

    Returns:
        The path relative to `media_dir`, for attachments.stored_path.
    """
    month = (attachment.created_at or utcnow()).strftime("%Y%m")
    extension = extension_for(
        content_type, file_name, attachment.file_name, fallback_type=attachment.mime_type
    )
    relative = Path(attachment.channel) / month / f"{attachment.id}{extension}"
    target = Path(media_dir) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(content)
    partial.replace(target)
    return str(relative)
