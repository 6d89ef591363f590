FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 caseapi

# The dependencies exactly as tested, each checked against its hash; then
# the project itself, installed as a wheel (migrations and seed inside),
# without resolving anything again.
COPY requirements.lock /tmp/caseapi/
RUN pip install --require-hashes -r /tmp/caseapi/requirements.lock
COPY pyproject.toml setup.py README.md /tmp/caseapi/
COPY app /tmp/caseapi/app
COPY migrations /tmp/caseapi/migrations
COPY seed /tmp/caseapi/seed
RUN pip install --no-deps /tmp/caseapi && rm -rf /tmp/caseapi

# What an instance writes (a demo's SQLite database and key file) goes here,
# attachments below it. Both exist in the image, owned by the service's user:
# a new named volume mounted there takes over that owner.
WORKDIR /var/lib/caseapi
RUN mkdir -p /var/lib/caseapi/caseapi-files && chown -R caseapi:caseapi /var/lib/caseapi
ENV CASEAPI_STORAGE_DIR=/var/lib/caseapi/caseapi-files
USER caseapi
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready').status != 200)"
CMD ["caseapi", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
