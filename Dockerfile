# InferSight sidecar image.
#
#   docker build -t infersight:0.1.0 .
#   docker run --rm -p 8090:8090 -v "$PWD/profile.json:/profiles/profile.json:ro" infersight:0.1.0 \
#       serve --upstream http://model-server:8080 --protocol v2 --profile /profiles/profile.json
#
# gRPC (Open Inference Protocol) as well: add `-p 8091:8091` and
# `--grpc-port 8091 --upstream-grpc model-server:8081`; without a gRPC port only HTTP is served.
#
# Two stages: the builder installs InferSight and its dependencies into a virtualenv (every
# dependency ships manylinux wheels, so no compiler is needed even there); the runtime stage is
# the same slim Python with only that virtualenv copied in, run as an unprivileged user.
# Keep both FROM lines on the same tag: the venv's interpreter is the base image's.

FROM python:3.11.15-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/infersight

# Dependencies first, from pyproject.toml alone with a stub package (and an empty README, which
# the metadata names), so that editing app/ or the README does not reinstall numpy, scipy,
# pandas and pyarrow on every build.
WORKDIR /src
COPY pyproject.toml /src/
RUN mkdir -p /src/app \
    && touch /src/app/__init__.py /src/README.md \
    && /opt/infersight/bin/pip install --no-cache-dir /src \
    && /opt/infersight/bin/pip uninstall --yes infersight \
    && rm -rf /src/app /src/build /src/*.egg-info /src/README.md

COPY README.md LICENSE /src/
COPY app /src/app
RUN /opt/infersight/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/infersight/bin/infersight --help >/dev/null

# Smaller runtime: the scientific wheels' own test suites (~115 MB) and pip are never used there.
RUN find /opt/infersight/lib/python3.11/site-packages/numpy \
        /opt/infersight/lib/python3.11/site-packages/scipy \
        /opt/infersight/lib/python3.11/site-packages/pandas \
        /opt/infersight/lib/python3.11/site-packages/pyarrow \
        /opt/infersight/lib/python3.11/site-packages/sklearn \
        -type d -name tests -prune -exec rm -rf {} + \
    && /opt/infersight/bin/python -m pip uninstall --yes pip \
    && /opt/infersight/bin/python -c "import app.main, app.demo.runner, scipy.stats, sklearn.linear_model, pyarrow.parquet"


FROM python:3.11.15-slim AS runtime

LABEL org.opencontainers.image.title="InferSight" \
      org.opencontainers.image.description="Monitoring sidecar for ML model servers: validation, metrics, drift and request logs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# /profiles and /var/lib/infersight belong to the runtime user so that named volumes mounted
# there start out writable by it (the compose stack's one-shot `profile` service writes the demo
# profile; the feedback store keeps predictions awaiting their labels across restarts).
RUN groupadd --system --gid 10001 infersight \
    && useradd --system --uid 10001 --gid infersight --create-home \
        --home-dir /home/infersight --shell /usr/sbin/nologin infersight \
    && mkdir -p /profiles /var/lib/infersight \
    && chown infersight:infersight /profiles /var/lib/infersight

COPY --from=builder /opt/infersight /opt/infersight

ENV PATH="/opt/infersight/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INFERSIGHT_HOST=0.0.0.0 \
    INFERSIGHT_FEEDBACK__STORE=sqlite:/var/lib/infersight/feedback.db

USER 10001:10001
WORKDIR /home/infersight

# 8090: HTTP (inference, /metrics, probes). 8091: gRPC, served only when asked for with
# `--grpc-port 8091 --upstream-grpc HOST:PORT` (INFERSIGHT_GRPC__PORT, INFERSIGHT_GRPC__UPSTREAM).
EXPOSE 8090 8091

# No curl in slim images: the standard library does the probe. /healthz is the process itself
# (not the model server: that is /readyz); INFERSIGHT_PORT is honoured when it is set.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('INFERSIGHT_PORT', '8090'), timeout=4)"]

ENTRYPOINT ["infersight"]
CMD ["serve", "--host", "0.0.0.0"]
