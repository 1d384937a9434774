"""ESIM-style synthetic traffic recordings with box labels.

``generate(out_dir, preset, seed)`` writes a benchmark in the raw Gen4/eTraM layout;
``synthesize(preset, seed, split, index)`` returns one recording in memory; ``PRESETS`` lists the
named sizes. The pieces: ``scene`` (static street), ``traffic`` (lanes, arrivals, paths),
``shapes`` (what each class looks like), ``simulator`` (frames to events), ``noise``."""

from .presets import PRESETS, Preset, get_preset
from .recording import Recording, synthesize
from .simulator import EventSimulator, SensorConfig
from .writer import ensure_generated, generate

__all__ = [
    "PRESETS",
    "Preset",
    "get_preset",
    "Recording",
    "synthesize",
    "EventSimulator",
    "SensorConfig",
    "generate",
    "ensure_generated",
]
