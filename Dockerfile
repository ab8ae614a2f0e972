# syntax=docker/dockerfile:1
# GRAM Serve: one image for the API (`gram serve`, the default command) and the engine (`gram worker`).
#
# CPU torch by default. For NVIDIA GPUs pick a CUDA base and the matching torch wheel index, e.g.
#   docker build -t gram-serve:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# Both stages use BASE_IMAGE so the virtualenv built in the first runs unchanged in the second.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# CUDA base images carry no Python; the python:* images do, and then this is a no-op. Versions are left to
# the base image's distribution because they differ between bases.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src
# torch first, from its own index (PyPI's default torch is the multi-GB CUDA build), and in its own layer
# so that a code change does not download it again. pyproject pins the same version.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY kernels ./kernels
COPY model ./model
COPY service ./service
COPY loadtests ./loadtests
# A regular (non-editable) install: the package data includes the shipped checkpoints in model/weights.
RUN pip install . \
    && python3 -c "import pathlib, model; w = pathlib.Path(model.__file__).parent / 'weights'; print('weights:', sorted(p.name for p in w.glob('*')))"

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 gram \
    && useradd --system --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin gram
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    GRAM_HEALTH_URL=http://127.0.0.1:8000/healthz
USER 10001:10001
WORKDIR /home/gram
# 8000: the API; 9100: a worker's /metrics and /healthz.
EXPOSE 8000 9100
# Liveness only (/healthz); workers point GRAM_HEALTH_URL at their own port. Stdlib only: no curl in slim.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen(os.environ['GRAM_HEALTH_URL'], timeout=2)"]
CMD ["gram", "serve", "--host", "0.0.0.0", "--port", "8000"]
