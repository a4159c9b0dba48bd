# Builds the three service binaries into one small image; docker-compose.yml
# picks the binary with the service's command.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY events ./events
COPY internal ./internal
COPY cmd ./cmd
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/edge ./cmd/approver ./cmd/issuer ./cmd/admin
# The issuer's key directory, owned by the runtime user so that a volume
# mounted there can be written on first start.
RUN mkdir -p /out/keys

# Static binaries on a base with CA certificates and a non-root user, no
# shell and no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/edge /out/approver /out/issuer /out/admin /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/keys /keys
USER nonroot
# 8080: the edge's public HTTP listener. 9090: every service's debug
# listener (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
