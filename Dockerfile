# The Lesion Review server; docker-compose.yml runs it next to PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/lesion-review
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY models ./models
# Editable: templates/, static/, migrations/ and models/ are found beside the package.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /srv/lesion-review lesion \
    && chown -R lesion /srv/lesion-review

USER lesion
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health').status != 200)"
CMD ["sh", "-c", "lesion-review migrate && lesion-review serve --host 0.0.0.0"]
