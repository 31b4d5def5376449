"""The pod steps (ingest, mask, ndvi, lai, cog, stac, and the scenes/catalog ends) on one step contract.

``contract`` declares a step once, on one base (the shared inputs/outputs, the context a step body gets,
the failure record); ``registry`` is the one list of steps and the per-scene DAG; ``runner``
runs that DAG in-process (the cluster runs it as Argo pods, ``workflows`` builds those from the same
registry); ``failures`` is the per-scene failure record both paths write.
"""
