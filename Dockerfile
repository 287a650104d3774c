# One image for every freshrec process; the command picks the part:
#   freshrec worker | freshrec api | freshrec retrain | freshrec models rollback VERSION
# Build: docker build -t freshrec:0.1.0 .
# The base is pinned by tag; pin it by digest too where the registry policy asks for it.
# Any Debian-based image with python3 (3.11) and its venv module will do: without a registry,
# tests/deploy/test_image.py passes one made by debootstrap (--build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: a virtual environment with freshrec and its dependencies ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/freshrec
# Only what the package needs (see .dockerignore): a change to tests or docs
# does not invalidate the install layer.
# wheel[s]: the files of a wheels/ directory in the build context when there is one (wheels
# built on a host by `pip wheel`, setuptools and wheel among them, for a build without a
# package index: --build-arg OFFLINE=1 installs from them alone).
COPY pyproject.toml README.md wheel[s] ./
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
ARG OFFLINE=""
RUN /opt/freshrec/bin/pip install --no-compile ${OFFLINE:+--no-index --find-links /src} ".[s3]"

# --- final: the environment alone, run as an unprivileged user ----------------------
FROM ${PYTHON_IMAGE}
# implicit's compiled ALS needs the OpenMP runtime, libgomp1, which slim bases lack: without
# it `freshrec retrain` died importing implicit (found by running the image, issue 26). A base
# that has it (tests/deploy/test_image.py's, made by debootstrap) needs no download.
# hadolint ignore=DL3008
RUN if ! python3 -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('gomp'))"; \
    then apt-get update \
        && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
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
