# MLflow tracking server image for infra/compose/compose.yaml (build context: infra/compose).
# mlflow[auth] brings Flask-WTF, which the basic-auth app needs; psycopg2 is named explicitly in the
# backend URIs (postgresql+psycopg2://) because SQLAlchemy 2.1 defaults postgresql:// to psycopg 3.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install "mlflow[auth]==3.17.2" "psycopg2-binary==2.9.13" "boto3==1.44.5" \
 && useradd --create-home --uid 10001 mlflow

COPY --chmod=0755 mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/mlflow-entrypoint.sh"]
