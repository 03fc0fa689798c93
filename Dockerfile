# The one Latchkey image: every service runs from it as `latchkey serve <service>`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags "-s -w" -o /out/latchkey ./cmd/latchkey

FROM debian:bookworm-slim
# Chromium for the browser runner; the other services ignore it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 latchkey \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/latchkey latchkey
COPY --from=build /out/latchkey /usr/local/bin/latchkey
# Numeric, so Kubernetes' runAsNonRoot can verify it (deploy/kubernetes runs as 10001).
USER 10001:10001
ENV LATCHKEY_DATA_DIR=/var/lib/latchkey \
    LATCHKEY_GRPC_ADDR=0.0.0.0:7400 \
    LATCHKEY_HTTP_ADDR=0.0.0.0:7480 \
    LATCHKEY_LOG_FORMAT=json \
    LATCHKEY_CHROMIUM_PATH=/usr/bin/chromium
EXPOSE 7400 7480
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["dev"]
