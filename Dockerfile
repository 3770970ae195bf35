# The gateway and the dashboard share this image; compose.yaml runs one container of each over
# one data volume. Installed exactly as the README says: `pip install .`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home portcullis \
    && mkdir -p /data \
    && chown portcullis:portcullis /data

# Inside a container the services must listen on every interface; compose publishes them on
# the host's loopback only. Off loopback the gateway serves TLS: `portcullis init --server-cert
# NAME` makes tls/ (or mount your own server.pem and server.key there).
ENV PORTCULLIS_DATA=/data \
    PORTCULLIS_HOST=0.0.0.0 \
    PORTCULLIS_TLS_CERT=/data/tls/server.pem \
    PORTCULLIS_TLS_KEY=/data/tls/server.key \
    PORTCULLIS_DASHBOARD_HOST=0.0.0.0

USER portcullis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 8501

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import ssl, urllib.request; tls = ssl.create_default_context(cafile='/data/tls/ca.pem'); tls.check_hostname = False; urllib.request.urlopen('https://127.0.0.1:8080/healthz', timeout=2, context=tls)"]

ENTRYPOINT ["portcullis"]
CMD ["serve"]
