"""Everything that *describes* pods: Argo WorkflowTemplates and Argo Events objects built from the step
contracts (:mod:`steps.pipeline.contract`, :mod:`steps.pipeline.registry`, :mod:`steps.queue.orders`),
their rendering to
``manifests/base`` and submission to an Argo Server.

Nothing in ``steps`` imports this package; step images do not need Hera.
"""
