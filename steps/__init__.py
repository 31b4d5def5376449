"""raw2ready: Sentinel-2 L2A/L1C to analysis-ready NDVI/LAI products.

Everything in this package runs inside a pod (or in-process with the local runner).
"""

__version__ = "0.1.0"
