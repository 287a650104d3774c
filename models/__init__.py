"""The numeric core: interaction weighting, ALS training, batched fold-in, top-k, evaluation.

Pure over numpy arrays: numpy, scipy and implicit only. Nothing here imports
Kafka, Redis, fsspec, Spark, argparse or asyncio, or reads a file: the job that
feeds it data and publishes its results is :mod:`retrain`, and the model
version's format (:mod:`models.version`) reaches a store only through a
protocol, so every module is testable on in-memory data alone.
"""
