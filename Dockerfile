# One image for every freshrec process; the command picks the part:
#   freshrec worker | freshrec api | freshrec retrain | freshrec models rollback VERSION
# Build: docker build -t freshrec:0.1.0 .
# The base is pinned by tag; pin it by digest too where the registry policy asks for it.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: a virtual environment with freshrec and its dependencies ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/freshrec
# Only what the package needs (see .dockerignore): a change to tests or docs
# does not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY freshrec freshrec
COPY schemas schemas
COPY models models
COPY retrain retrain
COPY streams streams
COPY serving serving
COPY cli cli
# The s3 extra brings s3fs, for FRESHREC_MODEL_STORE=s3://... Every dependency
# installs from a binary wheel, so this stage needs no compiler either; it
# exists to keep pip's build tooling and the sources out of the final image.
RUN /opt/freshrec/bin/pip install --no-compile ".[s3]"

# --- final: the environment alone, run as an unprivileged user ----------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 freshrec \
    && useradd --system --uid 10001 --gid freshrec --no-create-home \
       --home-dir /var/lib/freshrec --shell /usr/sbin/nologin freshrec \
    && mkdir -p /var/lib/freshrec \
    && chown freshrec:freshrec /var/lib/freshrec
COPY --from=build /opt/freshrec /opt/freshrec
ENV PATH=/opt/freshrec/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRESHREC_DATA_DIR=/var/lib/freshrec/worker \
    FRESHREC_API_HOST=0.0.0.0 \
    FRESHREC_WORKER_WEB_HOST=0.0.0.0
WORKDIR /var/lib/freshrec
USER 10001:10001
# API, worker metrics and probes
EXPOSE 8080 6066
ENTRYPOINT ["freshrec"]
CMD ["--help"]
