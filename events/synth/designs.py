"""Which drawing each class gets."""

from __future__ import annotations

import numpy as np

from . import classes as C
from .people import bicycle, pedestrian, wheelchair
from .vehicles import bus, car, motorbike, tram, truck

DESIGNS = {
    C.PEDESTRIAN: pedestrian,
    C.CAR: car,
    C.BICYCLE: bicycle,
    C.BUS: bus,
    C.MOTORBIKE: motorbike,
    C.TRUCK: truck,
    C.TRAM: tram,
    C.WHEELCHAIR: wheelchair,
}


def make_design(class_id: int, rng: np.random.Generator):
    return DESIGNS[class_id](rng)
