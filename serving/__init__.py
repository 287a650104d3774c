"""The HTTP API: ``GET /recs/<user>`` answered from Redis alone, plus health, readiness and metrics.

``serving.app.create_app(settings)`` builds the aiohttp application;
``freshrec api`` (``serving.cli``) runs it in one or more worker processes that
share one port. No model math happens here: each request costs one Redis
round trip (see ``serving.store``).
"""
