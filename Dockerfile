# syntax=docker/dockerfile:1
#
# meshsds container image.
#
#   docker build -t meshsds .
#   docker run -v meshsds-data:/var/lib/meshsds -p 5677:5677 -p 5680:5680 meshsds \
#     serve --data-dir /var/lib/meshsds --sds-address 0.0.0.0:5677 \
#           --sds-tls-cert /etc/meshsds/tls/tls.crt --sds-tls-key /etc/meshsds/tls/tls.key
#
# The default command serves SDS on 127.0.0.1 only, which inside a container is
# reachable only from the same network namespace (e.g. an Envoy sidecar in the
# same pod). To accept data planes from elsewhere, listen on a non-loopback
# address and give meshsds a TLS certificate and key (mount them, e.g. from a
# Kubernetes Secret) as above. Plain text on a non-loopback address needs an
# explicit --sds-insecure, which this image never sets for you. Likewise the
# admin API stays on 127.0.0.1:5681 unless you configure --admin-tls-address.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that source edits reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/meshsds ./cmd/meshsds
# distroless has no shell to create the data directory, so make it here and
# copy it with the nonroot owner (uid 65532); a new named volume mounted there
# inherits that ownership.
RUN mkdir -m 0700 -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/meshsds /meshsds
COPY --from=build --chown=65532:65532 /out/data /var/lib/meshsds
# The data directory holds the embedded store and the dataplane token signing
# key: mount a volume here so they survive restarts.
VOLUME ["/var/lib/meshsds"]
USER nonroot:nonroot
# 5677 SDS (gRPC), 5680 metrics and health, 5681 admin API.
EXPOSE 5677 5680 5681
ENTRYPOINT ["/meshsds"]
CMD ["serve", "--data-dir", "/var/lib/meshsds"]
