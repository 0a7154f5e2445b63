"""The cloud side: ``icm serve`` receives ``.icm`` files and answers from their bitstreams.

:mod:`icm.serve.service` holds the request logic (engine-agnostic); :mod:`icm.serve.lit`
runs it on LitServe (the ``serve`` extra); :mod:`icm.client` talks to it.
"""
