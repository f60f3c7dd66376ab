# The ticketflow image: the worker by default, and the rest of the `ticketflow` CLI (intake servers,
# admin commands) with another command. Every dependency comes from PyPI; nothing is fetched at run time.
#
#   docker build -t ticketflow .
#   docker run --env-file .env ticketflow                 # ticketflow worker
#   docker run --env-file .env ticketflow ticketflow list # any other CLI command

ARG PYTHON_IMAGE=python:3.11.15-slim-trixie

# --- build: install the project and its dependencies into a self-contained virtualenv -------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/ticketflow
ENV PATH=/opt/ticketflow/bin:$PATH

WORKDIR /src
# Only what `pip install .` packages (see [tool.setuptools] in pyproject.toml); tests and state stay out.
COPY pyproject.toml README.md worker.py ./
COPY ticketflow ticketflow
COPY workflows workflows
COPY activities activities
COPY starter starter
COPY dashboards dashboards
RUN pip install . \
    && ticketflow --help >/dev/null

# --- runtime: the virtualenv on a clean base, run as an unprivileged user --------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ticketflow" \
      org.opencontainers.image.description="Help-desk ticket pipeline: one durable Temporal workflow per ticket" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/ticketflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 ticketflow \
    && useradd --system --uid 10001 --gid ticketflow --create-home --home-dir /home/ticketflow \
       --shell /usr/sbin/nologin ticketflow

COPY --from=build /opt/ticketflow /opt/ticketflow

WORKDIR /home/ticketflow
USER 10001:10001

# 9464: business metrics (prometheus-client); 9465: Temporal SDK worker metrics.
EXPOSE 9464 9465

# Exec form: the worker is PID 1 and receives SIGTERM itself, then drains in-flight activities.
STOPSIGNAL SIGTERM
CMD ["ticketflow", "worker"]
