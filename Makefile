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

## cluster: build and start three nodes in the background on 127.0.0.1,
## 127.0.0.2 and 127.0.0.3 (Linux: all of 127.0.0.0/8 is loopback), with their
## data and logs under .run/cluster/nN; the 2nd and 3rd join the 1st the first
## time. `make cluster-stop` stops them; `make cluster` again restarts them.
CLUSTER_DIR := $(RUN_DIR)/cluster
CLUSTER_NODES := 1 2 3
.PHONY: cluster cluster-stop
cluster: build
	@set -e; bin=$(CURDIR)/$(BIN); \
	running() { [ -f $(CLUSTER_DIR)/n$$1/pid ] && kill -0 $$(cat $(CLUSTER_DIR)/n$$1/pid) 2>/dev/null; }; \
	waitup() { \
		wd=$(CLUSTER_DIR)/n$$1; \
		for t in $$(seq 1 1200); do \
			if [ -s $$wd/data/admin.token ] && $$bin --api 127.0.0.$$1:7420 --token "$$(cat $$wd/data/admin.token)" status >/dev/null 2>&1; then echo "n$$1 is up on 127.0.0.$$1"; return 0; fi; \
			if ! running $$1; then echo "n$$1 failed:"; tail -n 20 $$wd/node.log; rm -f $$wd/pid; return 1; fi; \
			sleep 0.1; \
		done; \
		echo "n$$1 is not up after 120s: see $$wd/node.log"; return 1; \
	}; \
	for i in $(CLUSTER_NODES); do \
		d=$(CLUSTER_DIR)/n$$i; mkdir -p $$d; \
		if running $$i; then echo "n$$i is running already (pid $$(cat $$d/pid))"; continue; fi; \
		join=; token=; \
		if [ $$i != 1 ] && [ ! -f $$d/data/cluster.json ]; then \
			[ -n "$$n1up" ] || { waitup 1; n1up=1; }; \
			join="--join 127.0.0.1:7420"; \
			token=$$($$bin --api 127.0.0.1:7420 --token "$$(cat $(CLUSTER_DIR)/n1/data/admin.token)" cluster token); \
		fi; \
		echo "starting n$$i on 127.0.0.$$i $$join"; \
		STRATA_JOIN_TOKEN=$$token setsid $$bin up --ip 127.0.0.$$i --node-name n$$i --label zone=z$$i \
			--data-dir $$d/data --config $$d/config.yaml $$join >>$$d/node.log 2>&1 </dev/null & \
		echo $$! >$$d/pid; \
	done; \
	for i in $(CLUSTER_NODES); do waitup $$i; done; \
	echo; echo "Cluster of 3 nodes (data and node.log in $(CLUSTER_DIR)/n1..n3). Talk to any node:"; \
	echo "  export STRATA_TOKEN=\$$(cat $(CLUSTER_DIR)/n1/data/admin.token)"; \
	echo "  $(BIN) --api 127.0.0.1:7420 node list"; \
	echo "  $(BIN) --api 127.0.0.2:7420 volume create demo --size 1GiB"; \
	echo "  $(BIN) --api 127.0.0.3:7420 volume list"; \
	echo "Stop them: make cluster-stop (make cluster starts them again, without joining)."

## cluster-stop: stop the nodes `make cluster` started (SIGTERM, then SIGKILL after 60s).
cluster-stop:
	@for i in $(CLUSTER_NODES); do \
		d=$(CLUSTER_DIR)/n$$i; [ -f $$d/pid ] || continue; pid=$$(cat $$d/pid); \
		if kill -0 $$pid 2>/dev/null && tr '\0' ' ' </proc/$$pid/cmdline | grep -qF -- "$$d/data"; then kill -TERM $$pid; else rm -f $$d/pid; fi; \
	done; \
	for i in $(CLUSTER_NODES); do \
		d=$(CLUSTER_DIR)/n$$i; [ -f $$d/pid ] || continue; pid=$$(cat $$d/pid); \
		for t in $$(seq 1 600); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
		if kill -0 $$pid 2>/dev/null; then kill -KILL $$pid; echo "n$$i killed (no clean stop within 60s)"; else echo "n$$i stopped"; fi; \
		rm -f $$d/pid; \
	done

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
