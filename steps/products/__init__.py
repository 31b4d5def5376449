"""What the pipeline publishes: product definitions, COG I/O, the STAC catalog tree and the time-series store."""
