"""PyAV, the optional extra behind every video feature: imported here only, with an error that says how to
get it, so `import mma` and image work never need it."""

from __future__ import annotations

from types import ModuleType

from mma.errors import VideoUnavailableError

INSTALL_HINT = 'pip install "mma-sr[video]"'


def require_av() -> ModuleType:
    """The `av` module, or VideoUnavailableError naming the extra to install."""
    try:
        import av
    except ImportError:
        raise VideoUnavailableError(f"video needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av
