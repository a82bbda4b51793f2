# undercloud-live — the two set-up commands:
#   make image            build the default (Fedora-based) live image
#   make image BASE=debian  the Debian-based one
#   make test             the whole test suite (slow QEMU tests included)
#   make test-slow        only the slow tests: builds + the QEMU boot matrix
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

BASE ?= fedora
BIN := target/release/undercloud-live
OUT ?= target/images/undercloud-live-$(BASE).iso

.PHONY: all deps bin image test test-slow test-base test-image check lint fmt clean

all: bin

deps:
	scripts/install-deps

bin: deps
	cargo build --release --locked

# The Debian image is built from the Debian base that scripts/make-test-base
# produces (debootstrap, cached by its inputs); the Fedora one downloads
# Fedora's published base named in its spec.
image: bin
ifeq ($(BASE),debian)
	base=$$(scripts/make-test-base | tail -n1) && \
	$(BIN) build kickstart/undercloud-live-debian.yaml --output $(OUT) \
	  --base "$$base/rootfs.tar.xz" --base-checksum-url "$$base/SHA256SUMS"
else ifeq ($(BASE),fedora)
	$(BIN) build kickstart/undercloud-live-fedora.yaml --output $(OUT)
else
	@echo "BASE must be fedora or debian" >&2; exit 2
endif

test-base: deps
	scripts/make-test-base

# The minimal marker image the boot tests use, for poking at by hand.
test-image: bin
	base=$$(scripts/make-test-base | tail -n1) && \
	$(BIN) build tests/specs/minimal.yaml --output target/test-images/minimal.iso \
	  --base "$$base/rootfs.tar.xz" --base-checksum-url "$$base/SHA256SUMS"

# The whole suite: unit tests, image-format tests against independent tools,
# and end-to-end builds that boot in QEMU.
test: deps
	cargo build --release --locked
	UCL_TEST_BASE=$$(scripts/make-test-base | tail -n1) \
	  cargo test --release --locked -- --test-threads=2

# The end-to-end builds, the boot matrix {uefi, uefi-secure, bios} x {cdrom,
# usb, disk}, persistence, erofs, media checksum and the 4.5 GiB image.
test-slow: deps
	cargo build --release --locked
	UCL_TEST_BASE=$$(scripts/make-test-base | tail -n1) \
	  cargo test --release --locked --test e2e --test media -- --test-threads=2

check: lint
lint:
	cargo fmt --all -- --check
	cargo clippy --release --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
