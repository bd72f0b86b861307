# Production image: the API (`serve`); run the engine from the same image with `python -m app worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    GRAPHIQL=false \
    GRAPHQL_INTROSPECTION=false

WORKDIR /srv/order-api
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY app ./app
COPY alembic ./alembic
COPY seeds ./seeds
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /srv/order-api --shell /usr/sbin/nologin orderapi

USER orderapi
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)" || exit 1

# Needs API_DATABASE_URL (login role authenticator) and JWT_SECRET or JWT_JWKS.
CMD ["python", "-m", "app", "serve"]
