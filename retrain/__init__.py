"""The retrain job (the CronJob's command) and what only it does with the outside world.

The changelog snapshot (Kafka), the lock (Redis), the item tables of pruned
versions (Redis), the Spark engine, the data-file loaders, training with
tuning behind the gate, publishing a version and moving the pointer, and the
``freshrec train``/``evaluate``/``retrain``/``models`` commands. The numbers
themselves come from :mod:`models`, which stays pure; the model store the
worker reads too sits in the floor (:mod:`freshrec.model_store`), since the
process parts never import each other.
"""
