# One image for the code location and the Dagster services (gRPC code server,
# dagster-webserver, dagster-daemon), as in Dagster's deploy_docker example.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    BI_PLATFORM_HOME=/opt/bi_platform/home \
    HF_HUB_DISABLE_TELEMETRY=1

# Java 17 for PySpark (local mode); procps for Spark's scripts; PostgreSQL client tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps postgresql-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bi_platform/app
COPY pyproject.toml README.md ./
COPY bi_platform ./bi_platform
RUN pip install -e .

COPY dagster.yaml workspace.yaml ./
COPY deploy/workspace.yaml $DAGSTER_HOME/workspace.yaml
RUN cp dagster.yaml $DAGSTER_HOME/dagster.yaml && mkdir -p $BI_PLATFORM_HOME $DAGSTER_HOME/logs

EXPOSE 4000
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "bi_platform.definitions"]
