"""The eight eTraM classes with real-world sizes and speeds.

Sizes are in metres and become pixels through the camera's scale (pixels per metre at the nearest
sidewalk, times the perspective factor of the object's lane), so a preset at any resolution gets
objects of the right apparent size and speed: a car is ~4.5 m long and drives at 6-14 m/s, a
pedestrian is ~1.7 m tall and walks at 1-1.8 m/s."""

from __future__ import annotations

from dataclasses import dataclass

PEDESTRIAN, CAR, BICYCLE, BUS, MOTORBIKE, TRUCK, TRAM, WHEELCHAIR = range(8)
CLASS_NAMES = ("pedestrian", "car", "bicycle", "bus", "motorbike", "truck", "tram", "wheelchair")


@dataclass(frozen=True)
class ClassSpec:
    """``length_m``: horizontal extent in side view; ``aspect``: height / length of the box;
    ``speed_ms``: ground speed; ``animated``: redrawn every frame (legs, pedals, spokes) rather
    than drawn once and translated."""

    class_id: int
    length_m: tuple[float, float]
    aspect: tuple[float, float]
    speed_ms: tuple[float, float]
    animated: bool

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]


SPECS = {
    PEDESTRIAN: ClassSpec(PEDESTRIAN, (0.62, 0.78), (2.3, 2.7), (1.0, 1.8), True),
    CAR: ClassSpec(CAR, (3.8, 4.9), (0.31, 0.38), (6.0, 14.0), False),
    BICYCLE: ClassSpec(BICYCLE, (1.65, 1.85), (0.95, 1.05), (3.5, 7.0), True),
    BUS: ClassSpec(BUS, (10.0, 13.0), (0.25, 0.29), (5.0, 11.0), False),
    MOTORBIKE: ClassSpec(MOTORBIKE, (2.0, 2.3), (0.68, 0.78), (7.0, 15.0), False),
    TRUCK: ClassSpec(TRUCK, (6.0, 10.0), (0.36, 0.48), (5.0, 11.0), False),
    TRAM: ClassSpec(TRAM, (22.0, 32.0), (0.11, 0.14), (5.0, 10.0), False),
    WHEELCHAIR: ClassSpec(WHEELCHAIR, (1.0, 1.2), (1.1, 1.25), (0.6, 1.3), True),
}
