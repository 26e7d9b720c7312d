# The streamwarden image: the worker, the traffic generator and the CLI.
FROM python:3.11.10-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY detectors ./detectors
RUN pip install --no-cache-dir . && useradd --system --uid 10001 streamwarden
USER streamwarden
ENTRYPOINT ["streamwarden"]
CMD ["--help"]
