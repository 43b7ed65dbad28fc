# One image for every canalflow service of docker-compose.yml: the `canalflow` CLI.
#   docker build -t canalflow .
#   docker run --rm canalflow --help
FROM python:3.11-slim

# CJK font for Chinese dashboard previews and bills (reportlab/matplotlib embed it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-wqy-zenhei \
 && rm -rf /var/lib/apt/lists/*

# uid/gid 1883 = the `mosquitto` user of eclipse-mosquitto: the broker can read the password
# file that the `credentials` service writes with mode 0600.
RUN groupadd --gid 1883 canalflow && useradd --uid 1883 --gid 1883 --create-home canalflow

WORKDIR /app
COPY pyproject.toml README.md ./
COPY canalflow ./canalflow
COPY edge ./edge
COPY ingest ./ingest
COPY billing ./billing
COPY dashboards ./dashboards
COPY firmware_sim ./firmware_sim
COPY web ./web
# Not testbed/ (test servers, the demo, load generators): the product runs without it (docs/design.md).
# psycopg: the PostgreSQL driver of the billing ledger (SQLAlchemy URL postgresql+psycopg://).
RUN pip install --no-cache-dir . "psycopg[binary]>=3.1,<4"
COPY examples ./examples

RUN mkdir -p /data /run/canalflow /etc/canalflow/mqtt && chown canalflow:canalflow /data /run/canalflow /etc/canalflow/mqtt
USER canalflow
ENTRYPOINT ["canalflow"]
CMD ["--help"]
