# undercloud-live — the two set-up commands:
#   make image            build the default live image: the build host's
#                         distribution family (scripts/host-base)
#   make image BASE=debian|fedora  one or the other explicitly
#   make test             the whole test suite (slow QEMU tests included)
#   make test-slow        only the slow tests: builds + the QEMU boot matrix
#   make bench            benchmarks against public tools (scripts/bench-*), into docs/benchmarks.md
#   make fuzz             the parsers' fuzzer for FUZZ_SECONDS per target (docs/fuzzing.md)
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

# The host's family by default: its mirrors are the ones this machine is
# known to reach (mkosi's convention).
HOST_BASE := $(shell scripts/host-base)
BASE ?= $(firstword $(HOST_BASE))
BIN := target/release/undercloud-live
OUT ?= target/images/undercloud-live-$(BASE).iso
# The deploy ramdisk the undercloud image carries (ironic-python-agent,
# kickstart/ipa-ramdisk-debian.yaml): Debian's agent serves either base.
IPA := target/images/ipa
IPA_INPUTS := kickstart/ipa-ramdisk-debian.yaml $(shell find overlays/ipa-ramdisk -type f 2>/dev/null)

.PHONY: all deps bin image test test-slow test-base test-image bench fuzz check lint fmt clean

all: bin

deps:
	scripts/install-deps

bin: deps
	cargo build --release --locked

# The Fedora image starts from Fedora's signed Container Base, the Debian
# one from a debootstrap root (made once, then cached): both specs name
# their base by distro and release alone.
# The mirror is probed before the compiler runs: an unreachable one is a
# one-line answer in seconds, not after minutes of compiling.
image: deps
	@case "$(BASE)" in fedora|debian) ;; *) echo "BASE must be fedora or debian" >&2; exit 2;; esac
	@scripts/probe-mirror $(BASE)
	cargo build --release --locked
	@if [ "$(origin BASE)" = file ]; then echo "==> $(wordlist 2,999,$(HOST_BASE))"; \
	 else echo "==> $(BASE): BASE=$(BASE) given"; fi
	@$(MAKE) --no-print-directory $(IPA).initramfs
	$(BIN) build kickstart/undercloud-live-$(BASE).yaml --output $(OUT)
	@echo; echo "The image is $(OUT). Next:"; \
	 echo "  $(BIN) boot $(OUT) --as usb --firmware uefi   # try it in QEMU"; \
	 echo "  $(BIN) write $(OUT) /dev/sdX                  # put it on a USB stick"; \
	 echo "  $(BIN) inspect $(OUT)                         # what is inside"

# Rebuilt only when its spec or element changed.
$(IPA).initramfs: $(IPA_INPUTS)
	$(BIN) build kickstart/ipa-ramdisk-debian.yaml --output $(IPA)

test-base: deps
	scripts/make-test-base

# The minimal marker image the boot tests use, for poking at by hand.
test-image: bin
	base=$$(scripts/make-test-base | tail -n1) && \
	$(BIN) build tests/fixtures/specs/minimal.yaml --output target/test-images/minimal.iso \
	  --base "$$base/rootfs.tar.xz" --base-checksum-url "$$base/SHA256SUMS"

# The whole suite: unit tests, image-format tests against independent tools,
# and end-to-end builds that boot in QEMU.
# Everything, as root: the tests that need root, KVM or QEMU are #[ignore]d
# for a plain `cargo test` and run here; UCL_REQUIRE_ALL turns any skip
# (a missing tool, OVMF, /dev/kvm) into a failure.
test: deps
	cargo build --release --locked
	UCL_REQUIRE_ALL=1 UCL_TEST_BASE=$$(scripts/make-test-base | tail -n1) \
	  cargo test --release --locked -- --include-ignored --test-threads=2

# The fuzzer `make test` runs for 3 s per target (tests/fuzz.rs), for
# longer: FUZZ_SECONDS per target, UCL_FUZZ_SEED to replay a run.
FUZZ_SECONDS ?= 300
fuzz: deps
	UCL_FUZZ_SECONDS=$(FUZZ_SECONDS) cargo test --release --locked --test fuzz -- --nocapture

# Not a test: compares undercloud-live with the standard tools on the same
# inputs in the same run and records the ratios in docs/benchmarks.md
# (each script its own section, bench-summary the table at the top).
# Needs root; installs live-build, GNU time and xfsprogs first. About 12 min
# here with warm caches, 20 min on a machine that never ran it.
BENCHES := bench-micro bench-assembly bench-write bench-fetch bench-ramdisk bench-build bench-rebuild
bench: bin
	scripts/install-deps --bench
	@start=$$(date +%s); \
	for s in $(BENCHES); do echo "== scripts/$$s"; scripts/$$s || exit 1; done; \
	scripts/bench-summary $$(( $$(date +%s) - start ))

# The end-to-end builds, the boot matrix {uefi, uefi-secure, bios} x {cdrom,
# usb, disk}, persistence, erofs, media checksum, the 4.5 GiB image and the
# unattended install to a disk (booted under UEFI and BIOS).
test-slow: deps
	cargo build --release --locked
	UCL_TEST_BASE=$$(scripts/make-test-base | tail -n1) \
	  cargo test --release --locked --test e2e --test media --test install --test undercloud -- --include-ignored --test-threads=2

check: lint
lint:
	cargo fmt --all -- --check
	cargo clippy --release --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
