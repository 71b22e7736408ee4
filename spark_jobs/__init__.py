"""Spark jobs: raw interaction logs -> dataset bundles (see distrec/data/schema.py).

Torch-free on purpose: the driver and executors import only pyspark, pyarrow and
``distrec.data.schema``.
"""
