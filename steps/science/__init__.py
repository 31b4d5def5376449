"""Pure science: numpy in, numpy out. Nothing here imports I/O or other raw2ready modules."""
