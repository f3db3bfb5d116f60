# syntax=docker/dockerfile:1.7
#
# kadapt images, two targets from one file:
#
#   docker build --target operator -t kadapt-operator:0.1.0 .   # kopf operator: small, no torch
#   docker build --target trainer  -t kadapt-trainer:0.1.0 .    # CUDA, torch, DeepSpeed (ops prebuilt),
#                                                               # transformers, peft
#
# Every Python package is pinned by constraints.txt (the versions the test suite ran with);
# base images are pinned by tag here and can be pinned by digest with --build-arg.
# Both images run as the non-root UID 1000 that the Helm chart and the rendered training
# pods use (runAsUser: 1000), with nothing written outside /tmp and mounted volumes.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# wheel: the kadapt distribution itself (pure Python), built once for both targets.
FROM ${PYTHON_IMAGE} AS wheel
ARG KADAPT_VERSION=0.1.0
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
COPY trainer/ trainer/
RUN pip install --no-cache-dir -c constraints.txt "setuptools==84.2.1" \
 && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
 && test -f "/wheels/kadapt-${KADAPT_VERSION}-py3-none-any.whl"

# ---------------------------------------------------------------------------------------------
# operator-build: a virtual environment with kadapt[operator] (kopf, aiohttp, prometheus-client).
FROM ${PYTHON_IMAGE} AS operator-build
ARG KADAPT_VERSION=0.1.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/kadapt \
 && /opt/kadapt/bin/pip install --no-cache-dir -c /tmp/constraints.txt \
      "/wheels/kadapt-${KADAPT_VERSION}-py3-none-any.whl[operator]" \
 && if /opt/kadapt/bin/pip show torch deepspeed >/dev/null 2>&1; then echo "torch in the operator image" >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------
# operator: what the Helm chart's Deployment runs (`kadapt operator ...`).
FROM ${PYTHON_IMAGE} AS operator
ARG KADAPT_UID=1000
ARG KADAPT_VERSION=0.1.0
LABEL org.opencontainers.image.title="kadapt-operator" \
      org.opencontainers.image.description="kadapt operator: AdaptationJob -> DeepSpeed training gangs" \
      org.opencontainers.image.version="${KADAPT_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid "${KADAPT_UID}" kadapt \
 && useradd --system --uid "${KADAPT_UID}" --gid kadapt --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin kadapt
COPY --from=operator-build /opt/kadapt /opt/kadapt
ENV PATH=/opt/kadapt/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KADAPT_OPERATOR_CONFIG=/etc/kadapt/operator.yaml
USER ${KADAPT_UID}:${KADAPT_UID}
WORKDIR /tmp
# 8000: Prometheus /metrics; 8080: kopf's /healthz (liveness).
EXPOSE 8000 8080
ENTRYPOINT ["kadapt"]
CMD ["operator", "--help"]

# ---------------------------------------------------------------------------------------------
# trainer-build: torch (CUDA build), DeepSpeed with its CUDA/C++ ops compiled ahead of time
# (no JIT compile in every pod), transformers, peft. Needs nvcc: the CUDA devel image.
FROM ${CUDA_DEVEL_IMAGE} AS trainer-build
ARG KADAPT_VERSION=0.1.0
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8
# A100, A10/L4-class, L40/Ada, H100/H200.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Ubuntu's security updates replace exact package versions; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git libaio-dev \
 && rm -rf /var/lib/apt/lists/*
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
# constraints.txt pins torch by its public version only (torch==X, no +cpu/+cu tag): scripts/setup.sh
# reads X from it and picks the CPU build X+cpu (from its sources, else the CPU index). Here the same
# X (TORCH_VERSION; a test checks they agree) comes from the CUDA index, and torch and deepspeed,
# each installed by its own pinned line, are left out of the constraints the other installs use.
RUN grep -v -E '^(torch|deepspeed)==' /tmp/constraints.txt > /tmp/constraints-cuda.txt \
 && python3 -m venv /opt/kadapt \
 && /opt/kadapt/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && /opt/kadapt/bin/pip install --no-cache-dir -c /tmp/constraints-cuda.txt ninja packaging "setuptools==84.2.1"
# No GPU at build time: DS_ACCELERATOR=cuda makes DeepSpeed build the CUDA ops anyway
# (it would otherwise detect the CPU accelerator and build CPU ops only).
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    DS_ACCELERATOR=cuda \
    DS_BUILD_OPS=0 \
    DS_BUILD_FUSED_ADAM=1 \
    DS_BUILD_CPU_ADAM=1 \
    DS_BUILD_FUSED_LAMB=1 \
    DS_BUILD_UTILS=1 \
    DS_BUILD_AIO=1 \
    MAX_JOBS=8
RUN /opt/kadapt/bin/pip install --no-cache-dir --no-build-isolation -c /tmp/constraints-cuda.txt \
      "deepspeed==${DEEPSPEED_VERSION}" \
 && /opt/kadapt/bin/pip install --no-cache-dir -c /tmp/constraints-cuda.txt \
      "/wheels/kadapt-${KADAPT_VERSION}-py3-none-any.whl[trainer]" \
 && /opt/kadapt/bin/python -c "import glob, re; \
src = open(glob.glob('/opt/kadapt/lib/python3*/site-packages/deepspeed/git_version_info_installed.py')[0]).read(); \
missing = [op for op in ('fused_adam', 'cpu_adam', 'fused_lamb', 'utils', 'async_io') \
           if not re.search(r\"'%s': True\" % op, src)]; \
assert not missing and \"accelerator_name='cuda'\" in src, f'DeepSpeed CUDA ops not prebuilt: {missing}'"

# ---------------------------------------------------------------------------------------------
# trainer: what training pods run (`torchrun ... -m kadapt_trainer --config /etc/kadapt/trainer.json`).
FROM ${CUDA_RUNTIME_IMAGE} AS trainer
ARG KADAPT_UID=1000
ARG KADAPT_VERSION=0.1.0
LABEL org.opencontainers.image.title="kadapt-trainer" \
      org.opencontainers.image.description="kadapt trainer: DeepSpeed adaptation (head-only, partial, full, LoRA)" \
      org.opencontainers.image.version="${KADAPT_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# Same as above: the base image tag pins the Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libaio1t64 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid "${KADAPT_UID}" kadapt \
 && useradd --uid "${KADAPT_UID}" --gid kadapt --home-dir /tmp --no-create-home --shell /usr/sbin/nologin kadapt
COPY --from=trainer-build /opt/kadapt /opt/kadapt
# Pods run with a read-only root filesystem: every cache goes to /tmp (an emptyDir in the pod).
ENV PATH=/opt/kadapt/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    DS_BUILD_OPS=0
USER ${KADAPT_UID}:${KADAPT_UID}
WORKDIR /tmp
# 9090: rank 0's /progress and /metrics; 29500: torchrun rendezvous.
EXPOSE 9090 29500
ENTRYPOINT []
CMD ["python3", "-m", "kadapt_trainer", "--help"]
