"""Network parts: the sparse voxel backbone and the detector blocks."""
