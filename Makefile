# Strata. `make run` starts a single node; `make test` installs what the tests
# need and runs them. See README.md.

GO        ?= go
BIN       := bin/strata
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
RUN_DIR   ?= $(CURDIR)/.run
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2

# Debian packages the tests drive: NBD clients and servers, fio, filesystems, FUSE,
# and the database servers masked templates are made with.
TEST_PACKAGES := qemu-utils libnbd-bin nbdkit fio xfsprogs e2fsprogs fuse3 util-linux busybox-static postgresql mariadb-server
TEST_COMMANDS := qemu-img qemu-io nbdinfo nbdcopy nbdkit fio mkfs.xfs mkfs.ext4 fusermount3 losetup blkid busybox pg_ctlcluster mariadb-install-db
# test/vm boots a VM for the kernel's NBD client: QEMU and a Debian kernel
# with the nbd module (installed next to the running kernel, never booted).
VM_PACKAGES   := qemu-system-x86 linux-image-cloud-amd64

.PHONY: all build run test test-deps lint unit proto proto-deps bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/strata

## run: build and start one node with its data under .run/ (Ctrl-C stops it).
run: build
	@mkdir -p $(RUN_DIR)
	$(BIN) up --data-dir $(RUN_DIR)/data

## test: install the test dependencies when missing, lint, then run every test.
test: test-deps lint unit

test-deps:
	@missing=""; for c in $(TEST_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing test packages (missing:$$missing)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(TEST_PACKAGES) >/dev/null; \
	fi
	@if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! ls /lib/modules/*/kernel/drivers/block/nbd.ko >/dev/null 2>&1; then \
		echo "installing the VM test packages: $(VM_PACKAGES)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(VM_PACKAGES) >/dev/null; \
	fi
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@test -x $(GOBIN)/helm || $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

unit:
	$(GO) test -count=1 -timeout 15m ./...

## proto: regenerate api/ from api/strata/v1/strata.proto, installing protoc
## (Debian) and the Go plugins at the versions the generated code names.
PROTO_PLUGINS := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2 \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.32.0 \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.32.0

proto-deps:
	@command -v protoc >/dev/null 2>&1 && test -f /usr/include/google/protobuf/timestamp.proto || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; }
	@for p in $(PROTO_PLUGINS); do b=$$(basename $${p%@*}); test -x $(GOBIN)/$$b || $(GO) install $$p; done

proto: proto-deps
	cd api && PATH=$(GOBIN):$$PATH protoc -I . -I /usr/include \
		--go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. \
		--grpc-gateway_out=paths=source_relative,grpc_api_configuration=strata/v1/http.yaml:. \
		--openapiv2_out=grpc_api_configuration=strata/v1/http.yaml,allow_merge=true,merge_file_name=strata:. \
		strata/v1/strata.proto

## bench: run the benchmarks under bench/ and print their tables.
bench: build
	bench/run.sh

clean:
	rm -rf bin .run

## deploy-manifests: render deploy/kubernetes/strata.yaml from the Helm chart
## deploy/kubernetes/chart/strata (make test fails while they differ).
HELM_VERSION := v3.22.0
.PHONY: deploy-manifests
deploy-manifests:
	@test -x $(GOBIN)/helm || $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	$(GO) test -count=1 -run '^TestRenderedManifests$$' ./deploy/kubernetes -update
