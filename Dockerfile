# syntax=docker/dockerfile:1.7
# distrec images, one file, three targets (same base, same non-root user, same pyproject):
#
#   docker build --target gpu   -t ghcr.io/distrec/distrec-gpu:0.1.0   .   # training on NVIDIA GPUs
#   docker build --target cpu   -t ghcr.io/distrec/distrec-cpu:0.1.0   .   # training on CPU (gloo)
#   docker build --target spark -t ghcr.io/distrec/distrec-spark:0.1.0 .   # bundle build (Spark on K8s)
#
# Pins come from pyproject.toml (see docker/requirements.py): the GPU image swaps only the CPU
# torch build for the CUDA one and the fbgemm shim for the real fbgemm-gpu of the same release.
# The CUDA runtime libraries arrive as the nvidia-* wheels that torch depends on; the driver comes
# from the node (NVIDIA container toolkit), so the base image needs no CUDA install.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# tini reaps torchrun's children and forwards SIGTERM, so a pod deletion lets ranks stop cleanly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 distrec \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin distrec \
 && python -m venv /opt/venv \
 && pip install --upgrade "pip>=24" \
 && mkdir -p /opt/distrec && chown distrec:distrec /opt/distrec
WORKDIR /opt/distrec
# Only what installing needs first, so code edits do not invalidate the dependency layers.
COPY pyproject.toml README.md ./
COPY tools/fbgemm_shim tools/fbgemm_shim
COPY docker/requirements.py docker/requirements.py

# ---------------------------------------------------------------------------------------------
FROM base AS gpu
# PyPI's torch 2.13.0 is the CUDA build; set TORCH_INDEX (e.g. .../whl/cu128) for another CUDA.
ARG TORCH_INDEX=""
RUN python docker/requirements.py gpu > /tmp/requirements.txt \
 && pip install ${TORCH_INDEX:+--extra-index-url ${TORCH_INDEX}} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY distrec distrec
COPY spark_jobs spark_jobs
COPY configs configs
# No `pip check` here: distrec's own metadata names the +cpu torch and the shim, which this image
# replaces on purpose; the import line checks what matters.
RUN pip install --no-deps . \
 && python -c "import torchrec, fbgemm_gpu, distrec.train"
ENV NCCL_DEBUG=WARN \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1
USER 1000:1000
EXPOSE 9400-9407
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["torchrun", "--help"]

# ---------------------------------------------------------------------------------------------
FROM base AS cpu
# The +cpu torch build lives on the PyTorch CPU index; everything else is plain PyPI. The shim
# in tools/fbgemm_shim keeps the CUDA fbgemm-gpu wheel out (see tools/fbgemm_shim/pyproject.toml).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python docker/requirements.py cpu > /tmp/requirements.txt \
 && pip install --extra-index-url ${TORCH_INDEX} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY distrec distrec
COPY spark_jobs spark_jobs
COPY configs configs
RUN pip install --no-deps . \
 && python -c "import torchrec, fbgemm_gpu, distrec.train" \
 && pip check
ENV OMP_NUM_THREADS=1
USER 1000:1000
EXPOSE 9400-9407
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["torchrun", "--help"]

# ---------------------------------------------------------------------------------------------
FROM base AS spark
# Spark on Kubernetes starts driver and executor pods from this image with the arguments
# `driver ...` / `executor`; docker/spark-entrypoint.sh turns them into spark-submit / the
# executor backend, as Spark's own image does. Spark itself is the pyspark wheel (its jars
# include spark-kubernetes), so the Spark version is the pyproject pin.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java
RUN python docker/requirements.py spark > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY distrec distrec
COPY spark_jobs spark_jobs
RUN pip install --no-deps . \
 && python -c "import pyspark, spark_jobs, distrec.data.schema"
ENV JAVA_HOME=/opt/java \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python
COPY --chmod=0755 docker/spark-entrypoint.sh /opt/entrypoint.sh
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/entrypoint.sh"]
