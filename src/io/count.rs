//! A reader that adds what passes through it to a progress bar: wrapped
//! around a compressed file, the bar follows the position in the file
//! while the decompressor above it pulls (the file's size is known, what
//! it unpacks to is not).

use std::io::{self, Read};

use crate::progress::Bar;

pub struct Counting<'a, R> {
    inner: R,
    bar: &'a mut Bar,
}

impl<'a, R> Counting<'a, R> {
    pub fn new(inner: R, bar: &'a mut Bar) -> Self {
        Counting { inner, bar }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
