FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/caseapi

RUN useradd --system --create-home --uid 10001 caseapi

COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY seed ./seed
RUN pip install -e .

USER caseapi
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready').status != 200)"
CMD ["caseapi", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
