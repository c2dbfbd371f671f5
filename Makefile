# The NVR appliance firmware. `make run` starts a demo appliance; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
CLIPS := build/clips
FUZZTIME ?= 30s

.PHONY: all deps clips build run test vet fmt-check bench fuzz clean

all: build

deps:
	@scripts/deps.sh

clips: deps
	@scripts/clips.sh $(CLIPS)

build:
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

# Starts swtpm, camsim with two cameras and nvrd recording them into ./data. Ctrl-C stops everything.
run: deps clips build
	@scripts/run.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: deps clips fmt-check vet build
	$(GO) test -race -timeout 25m ./...

# Benchmarks: every package's micro-benchmarks, then the whole-daemon ones in e2e (nvrd recording 1, 16 and
# 64 cameras: CPU per recorded GB, CPU % and RSS per camera). Figures are quoted in README.md.
bench: deps clips build
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v -e /e2e -e /appliance/camera -e /appliance/authz -e /appliance/evidence -e /update -e /appliance/playback)
	$(GO) test -run '^$$' -bench Login -benchtime 20x ./appliance/authz/
	$(GO) test -run '^$$' -bench 'Decide|AuditAppend' -benchtime 2s ./appliance/authz/
	$(GO) test -run '^$$' -bench . -benchtime 3x -benchmem ./appliance/camera/
	$(GO) test -run '^$$' -bench 'Export|Verify|ReadFile|SignaturesPerHour|ReadAuditAnchors' -benchtime 3x ./appliance/evidence/
	$(GO) test -run '^$$' -bench DownloadInstall -benchtime 3x ./update/
	$(GO) test -run '^$$' -bench 'IndexOpen|Seek|PlaybackStreams' -benchtime 100x -timeout 30m ./appliance/playback/
	$(GO) test -run '^$$' -bench . -benchtime 200x ./appliance/authz/directory/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./e2e/

# Runs every fuzz target for FUZZTIME, starting from the committed corpora.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin build

# The appliance image: rootfs/build.sh (debootstrap base cached under build/rootfs, keyed by the package
# lists); build/image/disk-amd64.img and rootfs-amd64.squashfs. ARCH=arm64 builds the arm64 root only.
.PHONY: image image-test
ARCH ?= amd64
image: build
	rootfs/build.sh $(ARCH) build/image

# Builds a test release and three images from the recipe (rootfs/imagetest.sh: firmware 1.0.0 as a disk,
# 1.1.0 whose nvrd never gets ready, 1.2.0; each reused under build/imagetest while its inputs are unchanged),
# then boots 1.0.0 in qemu (TCG) with swtpm: READY, the setup page over HTTPS, update to the bad 1.1.0
# rolled back by boot counting, update to 1.2.0 marked good. Prints image size, boot and update times.
image-test: build
	rootfs/imagetest.sh
	$(GO) test -tags imagetest -count=1 -v -run TestImage -timeout 40m ./rootfs/
