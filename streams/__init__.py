"""Kafka side of freshrec: the publisher for site back-ends, topic admin, and the Faust worker.

Importing this package imports nothing heavy; the Faust app lives in
``streams.app`` and is only loaded by the worker.
"""
