"""The numeric core: interaction weighting, ALS training, batched fold-in, top-k, evaluation.

Pure over numpy arrays: nothing here imports Kafka, Redis or asyncio. File I/O
(the model store, the data loaders) sits in its own modules (:mod:`models.store`,
:mod:`models.movielens`, :mod:`models.eventlog`) that the numeric modules never
import, so every numeric module is testable on in-memory data alone.
"""
