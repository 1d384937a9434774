"""Event data: readers and writers, windowing, voxelization, RVT preprocessing, synthetic scenes."""
