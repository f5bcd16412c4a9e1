# syntax=docker/dockerfile:1
#
# nr-bridge container image: a static binary on distroless, run as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t nr-bridge .
#
# No HEALTHCHECK: the orchestrator probes GET /healthz and GET /readyz
# (deploy/kubernetes), and the distroless image has no shell or curl to run
# one from inside the container anyway.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Use the Go of the image; never download another toolchain during a build.
ENV GOTOOLCHAIN=local CGO_ENABLED=0
# third_party/paho.golang is the patched paho that go.mod replaces paho with
# (third_party/paho.golang/NR-BRIDGE.md); go mod download needs its go.mod.
COPY go.mod go.sum ./
COPY third_party/ third_party/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# VERSION is stamped into the binary (nr-bridge -version, the start log and
# nr_bridge_build_info). TAGS=nodev leaves the embedded -dev servers out of
# the production binary; build with --build-arg TAGS= to keep them.
ARG VERSION=dev
ARG TAGS=nodev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -tags "${TAGS}" \
      -ldflags "-s -w -X main.buildVersion=${VERSION}" \
      -o /out/nr-bridge ./cmd/nr-bridge

# distroless static: CA certificates, /etc/passwd with nonroot (65532),
# tzdata, nothing else. The :nonroot tag runs as 65532:65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nr-bridge /usr/local/bin/nr-bridge
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nr-bridge"]
