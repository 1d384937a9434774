"""Pictures of event data for people: an event window as an RGB image (ON/OFF colours on a
neutral background) with ground-truth boxes and class names drawn over it, and optionally a
detector's predicted boxes (one colour for all, with their scores) over those."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .labels import BBOX_DTYPE

ETRAM_CLASS_NAMES = ("pedestrian", "car", "bicycle", "bus", "motorbike", "truck", "tram", "wheelchair")
BACKGROUND = (128, 128, 128)
ON_COLOR = (255, 255, 255)
OFF_COLOR = (0, 0, 0)
# Saturated and mutually distinct, so no box colour can be mistaken for an event pixel.
CLASS_COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


# Predictions share one colour outside the class palette, so they read apart from ground truth.
PREDICTION_COLOR = (255, 128, 0)


def class_color(class_id: int) -> tuple[int, int, int]:
    return CLASS_COLORS[int(class_id) % len(CLASS_COLORS)]


def event_image(x, y, p, width: int, height: int, background=BACKGROUND, on=ON_COLOR, off=OFF_COLOR) -> np.ndarray:
    """(height, width, 3) uint8. A pixel shows the polarity of its latest event in the window:
    the last change is what a viewer of a live sensor would see there."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    x = np.asarray(x, np.int64)
    y = np.asarray(y, np.int64)
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    pix = (y * width + x)[keep]
    pol = np.asarray(p)[keep]
    if pix.size:
        uniq, first_rev = np.unique(pix[::-1], return_index=True)
        last = pol[::-1][first_rev]
        flat = img.reshape(-1, 3)
        flat[uniq[last > 0]] = on
        flat[uniq[last == 0]] = off
    return img


def boxes_in_window(labels: np.ndarray | None, t_start_us: int, t_end_us: int) -> np.ndarray:
    """The boxes of the single label time nearest the window's end, among label times inside
    [t_start_us, t_end_us]; empty when the window holds no label time."""
    if labels is None:
        return np.zeros(0, BBOX_DTYPE)
    t = labels["t"]
    inside = (t >= t_start_us) & (t <= t_end_us)
    if not inside.any():
        return labels[:0]
    times = np.unique(t[inside])
    best = times[np.argmin(np.abs(times - t_end_us))]
    return labels[t == best]


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray,
    class_names=ETRAM_CLASS_NAMES,
    scale: float = 1.0,
    thickness: int = 1,
    color=None,
    show_score: bool = False,
) -> Image.Image:
    """Rectangles in the class colour (or ``color`` for all) with the class name (and the score in
    ``class_confidence`` when ``show_score``) on a tag above (or inside) the box."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    W, H = image.size
    for b in boxes:
        box_color = class_color(b["class_id"]) if color is None else color
        x0, y0 = int(round(float(b["x"]) * scale)), int(round(float(b["y"]) * scale))
        x1 = int(round(float(b["x"] + b["w"]) * scale)) - 1
        y1 = int(round(float(b["y"] + b["h"]) * scale)) - 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0), W - 1), min(max(y1, y0), H - 1)
        draw.rectangle((x0, y0, x1, y1), outline=box_color, width=thickness)
        cid = int(b["class_id"])
        name = class_names[cid] if cid < len(class_names) else str(cid)
        if show_score:
            name = f"{name} {float(b['class_confidence']):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        tw, th = right - left, bottom - top + 2
        ty = y0 - th - 1 if y0 - th - 1 >= 0 else y0 + thickness
        draw.rectangle((x0, ty, x0 + tw + 2, ty + th), fill=box_color)
        draw.text((x0 + 1 - left, ty + 1 - top), name, fill=(0, 0, 0), font=font)
    return image


def render_window(
    events,
    width: int,
    height: int,
    labels: np.ndarray | None,
    t_start_us: int,
    t_end_us: int,
    scale: int = 1,
    class_names=ETRAM_CLASS_NAMES,
    detections: np.ndarray | None = None,
) -> Image.Image:
    """Events with ``t_start_us <= t < t_end_us`` (``events`` time-sorted) and the boxes of the
    label time nearest the window end, enlarged ``scale`` times (nearest neighbour); predicted
    ``detections`` (box-label format, score in ``class_confidence``) are drawn over them."""
    lo, hi = np.searchsorted(events.t, [t_start_us, t_end_us], side="left")
    img = Image.fromarray(event_image(events.x[lo:hi], events.y[lo:hi], events.p[lo:hi], width, height))
    if scale != 1:
        img = img.resize((width * scale, height * scale), Image.NEAREST)
    boxes = boxes_in_window(labels, t_start_us, t_end_us)
    if len(boxes):
        draw_boxes(img, boxes, class_names, scale=scale, thickness=max(1, scale))
    predicted = boxes_in_window(detections, t_start_us, t_end_us)
    if len(predicted):
        draw_boxes(
            img, predicted, class_names, scale=scale, thickness=max(1, scale), color=PREDICTION_COLOR, show_score=True
        )
    return img


def save_gif(frames: list[Image.Image], path, frame_ms: float) -> None:
    """An animated GIF that loops; every frame kept, even when two look alike."""
    palette = [
        f.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for f in frames
    ]
    palette[0].save(
        path,
        save_all=True,
        append_images=palette[1:],
        duration=max(20, int(round(frame_ms))),
        loop=0,
        optimize=False,
        disposal=1,
    )
