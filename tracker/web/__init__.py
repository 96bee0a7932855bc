"""The HTTP side of the service, on FastAPI and uvicorn inside the worker's event loop:
``/livez``, ``/healthz`` and ``/metrics`` for orchestrators and Prometheus, the API under
``/api/v1`` and the console at ``/``."""
