# alignflow worker image (Prefect process workers): the project and its pinned stack.
# Build context: the repository root (compose.yaml sets context: ../..).
#   TORCH_INDEX_URL empty (default): torch from PyPI, the CUDA build, for the gpu worker.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: the CPU build, for the cpu worker.
# torch goes in first so that `pip install .` finds the pin satisfied and pulls no other build.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

WORKDIR /opt/alignflow
COPY pyproject.toml README.md ./
COPY alignment ./alignment
COPY evaluation ./evaluation
COPY tasks ./tasks
COPY flows ./flows
COPY arena ./arena
COPY bench ./bench
COPY storage ./storage
COPY launcher ./launcher
COPY configs ./configs
COPY infra/accelerate ./infra/accelerate
# psycopg2: the arena's votes in Postgres (postgresql+psycopg2:// URLs)
RUN pip install . "psycopg2-binary==2.9.13" \
 && useradd --create-home --uid 10001 alignflow \
 && mkdir -p /work && chown alignflow /work

USER alignflow
WORKDIR /work
ENV HF_HOME=/work/.cache/huggingface
CMD ["prefect", "worker", "start", "--help"]
