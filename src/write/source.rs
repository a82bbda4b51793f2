//! The image to write: a plain file, or one compressed with xz, zstd or
//! gzip, told by its magic bytes (names lie: `.img`, `.iso`, `.raw.xz`...),
//! and read as one stream of uncompressed bytes.
//!
//! The uncompressed size matters before writing starts: a stick that is too
//! small should be refused, not found out about at 90%. xz keeps it in the
//! index at the end of each stream and zstd (usually) in each frame header,
//! so both are read without decompressing; gzip only has the size modulo
//! 4 GiB, which is useless for images, so a gzip image's size is unknown
//! and a too-small device is found when it fills up.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Xz,
    Zstd,
    Gzip,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Gzip => "gzip",
        }
    }
}

/// An opened image, not yet read.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
    /// Uncompressed size, when the format tells it without decompressing.
    pub size: Option<u64>,
    /// Size of the file itself (compressed).
    pub file_len: u64,
    /// (st_dev, st_ino): a target that *is* the image is refused.
    pub id: (u64, u64),
    /// The device the image's file system lives on, to refuse writing over it.
    pub st_dev: u64,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let shown = path.display();
        let file = crate::io::open_regular(path, "image")?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading image {shown}"))?;
        if !meta.is_file() {
            bail!("image {shown}: not a regular file");
        }
        let file_len = meta.len();
        if file_len == 0 {
            bail!("image {shown}: empty file");
        }
        let mut head = [0u8; 6];
        let n = crate::io::read_full_at(&file, &mut head, 0)
            .with_context(|| format!("reading image {shown}"))?;
        let format = sniff(&head[..n]);
        if head[..n].starts_with(b"BZh") {
            bail!("image {shown}: bzip2 is not supported (use xz, zstd or gzip)");
        }
        let size = match format {
            Format::Raw => Some(file_len),
            Format::Xz => Some(
                xz_uncompressed_size(&file, file_len)
                    .with_context(|| format!("image {shown}: damaged or truncated xz file"))?,
            ),
            Format::Zstd => zstd_content_size(&file, file_len)
                .with_context(|| format!("image {shown}: damaged or truncated zstd file"))?,
            Format::Gzip => None,
        };
        if size == Some(0) {
            bail!("image {shown}: decompresses to nothing");
        }
        Ok(Source {
            path: path.to_path_buf(),
            format,
            size,
            file_len,
            id: (meta.dev(), meta.ino()),
            st_dev: meta.dev(),
        })
    }

    /// A fresh reader of the uncompressed bytes.
    pub fn reader(&self) -> Result<Box<dyn Read + Send>> {
        let shown = self.path.display();
        let file = crate::io::open_regular(&self.path, "image")?;
        if self.format == Format::Raw {
            // Read straight into the writer's chunks: no buffer needed.
            return Ok(Box::new(file));
        }
        // Decompressors read in small pieces; a large buffer keeps the
        // number of read calls down.
        let input = BufReader::with_capacity(1 << 20, file);
        Ok(match self.format {
            Format::Raw => Box::new(input),
            Format::Xz => Box::new(crate::io::xz::XzStreams::new(input)?),
            Format::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(input)
                    .with_context(|| format!("starting the zstd decoder for {shown}"))?;
                // Images compressed with `zstd --long` use windows beyond the
                // decoder's default limit; allow the format's maximum.
                d.window_log_max(31)
                    .with_context(|| format!("starting the zstd decoder for {shown}"))?;
                Box::new(d)
            }
            Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        })
    }
}

pub fn sniff(head: &[u8]) -> Format {
    const XZ: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
    const ZSTD: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    if head.starts_with(&XZ) {
        Format::Xz
    } else if head.starts_with(&ZSTD) || is_zstd_skippable(head) {
        // pzstd output starts with a skippable frame.
        Format::Zstd
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Format::Gzip
    } else {
        Format::Raw
    }
}

fn is_zstd_skippable(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xF0 == 0x50 && head[1..4] == [0x2A, 0x4D, 0x18]
}

// ---------------------------------------------------------------- xz index

/// Sum of the uncompressed sizes in the indexes of every stream, walking
/// back from the end of the file: footer -> index -> (blocks) -> header,
/// skipping stream padding between streams.
pub fn xz_uncompressed_size(file: &File, len: u64) -> Result<u64> {
    const FOOTER: u64 = 12;
    const HEADER: u64 = 12;
    // The index of a multi-terabyte image in 1 MiB blocks is still a few
    // MiB; anything bigger is not an index.
    const MAX_INDEX: u64 = 256 << 20;
    let mut end = len;
    let mut total: u64 = 0;
    let mut streams = 0;
    while end > 0 {
        // Stream padding: zero bytes in multiples of four.
        let mut word = [0u8; 4];
        while end >= 4 {
            file.read_exact_at(&mut word, end - 4)?;
            if word != [0; 4] {
                break;
            }
            end -= 4;
        }
        if end == 0 {
            break;
        }
        if end % 4 != 0 || end < HEADER + FOOTER {
            bail!("no stream footer at the end");
        }
        let mut footer = [0u8; FOOTER as usize];
        file.read_exact_at(&mut footer, end - FOOTER)?;
        if &footer[10..12] != b"YZ" || crc32(&footer[4..10]) != le32(&footer[0..4]) {
            bail!("no stream footer at byte {}", end - FOOTER);
        }
        let index_size = (u64::from(le32(&footer[4..8])) + 1) * 4;
        if index_size > MAX_INDEX || index_size + HEADER + FOOTER > end {
            bail!("index size out of range");
        }
        let index_start = end - FOOTER - index_size;
        let mut index = vec![0u8; index_size as usize];
        file.read_exact_at(&mut index, index_start)?;
        let (uncompressed, blocks) = parse_xz_index(&index)?;
        total = total
            .checked_add(uncompressed)
            .ok_or_else(|| anyhow!("sizes overflow"))?;
        let stream_start = index_start
            .checked_sub(blocks)
            .and_then(|s| s.checked_sub(HEADER))
            .ok_or_else(|| anyhow!("blocks extend before the start of the file"))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, stream_start)?;
        if header[..6] != [0xFD, b'7', b'z', b'X', b'Z', 0x00] || header[6..8] != footer[8..10] {
            bail!("no stream header at byte {stream_start}");
        }
        end = stream_start;
        streams += 1;
    }
    if streams == 0 {
        bail!("no xz stream");
    }
    Ok(total)
}

/// Returns (sum of uncompressed sizes, bytes taken by the blocks).
fn parse_xz_index(index: &[u8]) -> Result<(u64, u64)> {
    let body = index.len() - 4;
    if crc32(&index[..body]) != le32(&index[body..]) {
        bail!("index checksum mismatch");
    }
    if index[0] != 0 {
        bail!("bad index indicator");
    }
    let mut pos = 1;
    let records = varint(index, &mut pos)?;
    let mut uncompressed: u64 = 0;
    let mut blocks: u64 = 0;
    for _ in 0..records {
        let unpadded = varint(index, &mut pos)?;
        let size = varint(index, &mut pos)?;
        // Blocks are padded to a multiple of four bytes.
        blocks = blocks
            .checked_add(unpadded.div_ceil(4) * 4)
            .ok_or_else(|| anyhow!("sizes overflow"))?;
        uncompressed = uncompressed
            .checked_add(size)
            .ok_or_else(|| anyhow!("sizes overflow"))?;
    }
    if pos > body || index[pos..body].iter().any(|&b| b != 0) {
        bail!("bad index padding");
    }
    Ok((uncompressed, blocks))
}

/// xz's multibyte integer: seven bits a byte, little end first, at most 9.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let b = *buf.get(*pos).ok_or_else(|| anyhow!("index ends early"))?;
        *pos += 1;
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("bad integer in index")
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn crc32(data: &[u8]) -> u32 {
    // xz uses the same CRC-32 (IEEE) as gzip, which flate2 computes.
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

// ------------------------------------------------------------ zstd frames

/// The sum of the frames' content sizes, walking frame and block headers
/// (a few bytes read per 128 KiB block). `None` if any frame leaves its
/// size out (streamed compression does).
pub fn zstd_content_size(file: &File, len: u64) -> Result<Option<u64>> {
    let mut pos: u64 = 0;
    let mut total: u64 = 0;
    while pos < len {
        let mut magic = [0u8; 4];
        file.read_exact_at(&mut magic, pos)
            .with_context(|| format!("frame at byte {pos} is cut off"))?;
        if is_zstd_skippable(&magic) {
            let mut size = [0u8; 4];
            file.read_exact_at(&mut size, pos + 4)
                .with_context(|| format!("frame at byte {pos} is cut off"))?;
            pos += 8 + u64::from(le32(&size));
            continue;
        }
        if magic != [0x28, 0xB5, 0x2F, 0xFD] {
            bail!("no zstd frame at byte {pos}");
        }
        let mut fhd = [0u8; 1];
        file.read_exact_at(&mut fhd, pos + 4)?;
        let fhd = fhd[0];
        let single_segment = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        let window = if single_segment { 0 } else { 1 };
        let dict = [0u64, 1, 2, 4][usize::from(fhd & 3)];
        let fcs_len: u64 = match fhd >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        if fcs_len == 0 {
            return Ok(None);
        }
        let mut fcs = [0u8; 8];
        file.read_exact_at(&mut fcs[..fcs_len as usize], pos + 5 + window + dict)?;
        let mut size = u64::from_le_bytes(fcs);
        if fcs_len == 2 {
            // The two-byte form is offset by 256.
            size += 256;
        }
        total = total
            .checked_add(size)
            .ok_or_else(|| anyhow!("sizes overflow"))?;
        pos += 5 + window + dict + fcs_len;
        loop {
            let mut bh = [0u8; 3];
            file.read_exact_at(&mut bh, pos)
                .with_context(|| format!("block at byte {pos} is cut off"))?;
            let bh = u32::from(bh[0]) | u32::from(bh[1]) << 8 | u32::from(bh[2]) << 16;
            let last = bh & 1 != 0;
            let block_size = u64::from(bh >> 3);
            let content = match (bh >> 1) & 3 {
                0 | 2 => block_size,
                1 => 1, // RLE: one byte repeated
                _ => bail!("reserved block type at byte {pos}"),
            };
            pos += 3 + content;
            if last {
                break;
            }
        }
        if checksum {
            pos += 4;
        }
    }
    if pos > len {
        bail!("last frame is cut off");
    }
    Ok(Some(total))
}

// ------------------------------------------------------------- xz reader

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 / 3 % 251) as u8).collect()
    }

    fn xz(bytes: &[u8], block: u64) -> Vec<u8> {
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(block)
            .preset(0)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn sniffs_magic_not_names() {
        assert_eq!(sniff(&[0xFD, b'7', b'z', b'X', b'Z', 0]), Format::Xz);
        assert_eq!(sniff(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Format::Zstd);
        assert_eq!(sniff(&[0x50, 0x2A, 0x4D, 0x18]), Format::Zstd);
        assert_eq!(sniff(&[0x1F, 0x8B, 8]), Format::Gzip);
        assert_eq!(sniff(b"\xEB\x63\x90"), Format::Raw);
        assert_eq!(sniff(b""), Format::Raw);
    }

    #[test]
    fn xz_size_from_index_across_blocks_streams_and_padding() {
        let a = data(3 << 20);
        let b = data(100_000);
        let mut file = xz(&a, 1 << 20);
        file.extend_from_slice(&[0; 8]); // stream padding
        file.extend_from_slice(&xz(&b, 0));
        let (_t, f) = temp_with(&file);
        assert_eq!(
            xz_uncompressed_size(&f, file.len() as u64).unwrap(),
            (a.len() + b.len()) as u64
        );
        // And the reader decodes both streams.
        let (t, _) = temp_with(&file);
        let src = Source::open(t.path()).unwrap();
        assert_eq!(src.format, Format::Xz);
        let mut out = Vec::new();
        src.reader().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), a.len() + b.len());
        assert!(out[..a.len()] == a[..] && out[a.len()..] == b[..]);
    }

    #[test]
    fn truncated_xz_is_refused_before_writing() {
        let file = xz(&data(1 << 20), 0);
        let (t, _) = temp_with(&file[..file.len() - 5]);
        let err = format!("{:#}", Source::open(t.path()).unwrap_err());
        assert!(err.contains("damaged or truncated xz"), "{err}");
        assert!(err.contains(&t.path().display().to_string()), "{err}");
    }

    #[test]
    fn zstd_size_from_frame_headers() {
        let a = data(2 << 20);
        let b = data(300);
        let mut file = zstd::bulk::compress(&a, 1).unwrap();
        // A skippable frame between two frames, as pzstd writes.
        file.extend_from_slice(&[0x5E, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        file.extend_from_slice(&zstd::bulk::compress(&b, 3).unwrap());
        let (_t, f) = temp_with(&file);
        assert_eq!(
            zstd_content_size(&f, file.len() as u64).unwrap(),
            Some((a.len() + b.len()) as u64)
        );
    }

    #[test]
    fn zstd_without_content_size_is_unknown() {
        // A streaming encoder that is never told the size leaves it out.
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.include_contentsize(false).unwrap();
        e.write_all(&data(70_000)).unwrap();
        let file = e.finish().unwrap();
        let (_t, f) = temp_with(&file);
        assert_eq!(zstd_content_size(&f, file.len() as u64).unwrap(), None);
    }

    #[test]
    fn gzip_size_is_unknown_and_reads_back() {
        let a = data(500_000);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&a).unwrap();
        let (t, _) = temp_with(&e.finish().unwrap());
        let src = Source::open(t.path()).unwrap();
        assert_eq!((src.format, src.size), (Format::Gzip, None));
        let mut out = Vec::new();
        src.reader().unwrap().read_to_end(&mut out).unwrap();
        assert!(out == a);
    }

    #[test]
    fn empty_image_is_refused() {
        let (t, _) = temp_with(b"");
        let err = format!("{:#}", Source::open(t.path()).unwrap_err());
        assert!(err.contains("empty"), "{err}");
    }
}
