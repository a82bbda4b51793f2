//! Boot an image under QEMU and watch its serial console.
