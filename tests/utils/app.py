"""Starlette's test client, imported once for every test module that drives the app in-process."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # Starlette's test client now prefers httpx2; the project depends on httpx, which still works.
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient"]
