"""Annotated clips of a recording: frames (PIL images) into an animated GIF or an MP4.

GIF needs only Pillow (``events.render.save_gif``); its frames are kept in memory until the end,
so it suits clips of seconds. MP4 streams each frame to ffmpeg as it comes (H.264) and needs the
``imageio-ffmpeg`` package (``pip install -e ".[video]"``), which brings its own ffmpeg binary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMATS = (".gif", ".mp4")


def check_video_path(path) -> Path:
    """The path, or a one-line error before any work is done: an unknown suffix, or MP4 without
    imageio-ffmpeg."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"video={path}: the file name must end in .gif or .mp4")
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ValueError(
                f"video={path}: writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg, or the "
                "'video' extra); a .gif needs nothing more"
            ) from None
    return path


class VideoWriter:
    """``add(image)`` per frame, ``close()`` at the end (or use as a context manager)."""

    def __init__(self, path, fps: float = 20.0):
        self.path, self.fps = check_video_path(path), float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._frames: list = []
        self._mp4 = None
        self.count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, image) -> None:
        self.count += 1
        if self.path.suffix.lower() == ".gif":
            self._frames.append(image)
            return
        rgb = np.asarray(image.convert("RGB"))
        # H.264 in yuv420p needs even sides: pad by one row/column of the background, never resize
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._mp4 is None:
            import imageio_ffmpeg

            self._mp4 = imageio_ffmpeg.write_frames(
                str(self.path), (rgb.shape[1], rgb.shape[0]), fps=self.fps, macro_block_size=1
            )
            self._mp4.send(None)  # start the generator
        self._mp4.send(np.ascontiguousarray(rgb))

    def close(self) -> None:
        if self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        elif self._frames:
            from .render import save_gif

            save_gif(self._frames, self.path, 1000.0 / self.fps)
            self._frames = []
