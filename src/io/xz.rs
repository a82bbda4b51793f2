//! xz decoding with liblzma's multithreaded decoder, shared by the base
//! unpacker, the stick writer and the cpio summary (`fs::cpio`).

use std::fs;
use std::io::{self, BufRead, Read};

use anyhow::{anyhow, Result};

/// xz decoding with liblzma's multithreaded decoder, across concatenated
/// streams. Files made with `xz -T0` are split into independently
/// compressed blocks, which the threaded decoder decodes in parallel; the
/// threaded decoder has no "concatenated" flag here, so the next stream
/// after stream padding is started by hand.
pub struct XzStreams<R: BufRead> {
    decoder: Option<liblzma::bufread::XzDecoder<R>>,
}

impl<R: BufRead> XzStreams<R> {
    pub fn new(input: R) -> Result<Self> {
        Ok(XzStreams {
            decoder: Some(liblzma::bufread::XzDecoder::new_stream(
                input,
                threaded_xz_decoder()?,
            )),
        })
    }
}

fn threaded_xz_decoder() -> Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    liblzma::stream::MtStreamBuilder::new()
        .threads(u32::try_from(threads).unwrap_or(1))
        // Below this budget the decoder uses threads; above it, it falls
        // back to one thread instead of failing (xz's own default is a
        // quarter of RAM).
        .memlimit_threading(physical_memory() / 4)
        .memlimit_stop(u64::MAX)
        // No timeout: with one, a call may return having made no progress,
        // which the liblzma reader would take for a corrupt stream.
        .timeout_ms(0)
        .decoder()
        .map_err(|e| anyhow!("starting the xz decoder: {e}"))
}

fn physical_memory() -> u64 {
    const FALLBACK: u64 = 1 << 30;
    let Ok(text) = fs::read_to_string("/proc/meminfo") else {
        return FALLBACK;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(FALLBACK, |kib| kib * 1024)
}

impl<R: BufRead> Read for XzStreams<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of one stream. Skip stream padding (zero bytes); anything
            // else must be the next stream.
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let mut input = decoder.into_inner();
            loop {
                let avail = input.fill_buf()?;
                if avail.is_empty() {
                    return Ok(0);
                }
                let zeros = avail.iter().take_while(|&&b| b == 0).count();
                let more = zeros < avail.len();
                input.consume(zeros);
                if more {
                    break;
                }
            }
            let stream = threaded_xz_decoder().map_err(io::Error::other)?;
            self.decoder = Some(liblzma::bufread::XzDecoder::new_stream(input, stream));
        }
    }
}
