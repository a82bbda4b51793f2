//! ECMA-119 (ISO 9660) building blocks and the Rock Ridge extensions
//! (SUSP 1.12 / RRIP 1.12) on top of them.
//!
//! Everything here is a pure encoder: it turns values into the exact bytes of
//! the on-disc structures. Where things go (LBAs, order of the sectors) is
//! decided by `hybrid.rs`; this split keeps every structure unit-testable.

use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::HashSet;

use super::layout::SECTOR;

/// Largest extent we write for one section of a multi-extent file: the
/// biggest multiple of the sector size that fits the 32-bit data length.
/// Keeping every section but the last a whole number of sectors makes the
/// sections of a file contiguous on disc, so the file is still one run of
/// bytes (and one GPT partition can cover it).
pub const MAX_EXTENT: u64 = 0xFFFF_F800;

/// File flags (ECMA-119 9.1.6).
pub const FLAG_DIRECTORY: u8 = 0x02;
/// "This is not the final directory record for the file" (ECMA-119 9.1.6,
/// bit 7): the sections of a multi-extent file.
pub const FLAG_MULTI_EXTENT: u8 = 0x80;

/// Longest directory record (its length field is one byte).
pub const MAX_RECORD: usize = 255;

/// Length of a SUSP "CE" (continuation area) entry.
pub const CE_LEN: usize = 28;

/// Both-byte-order 16-bit field (ECMA-119 7.2.3): little-endian then big-endian.
pub fn both_u16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

/// Both-byte-order 32-bit field (ECMA-119 7.3.3).
pub fn both_u32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

/// Sectors needed for `bytes` bytes.
pub fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR)
}

// ---------------------------------------------------------------------------
// Time

/// A UTC calendar time, all we need to write ISO 9660 and RRIP timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Timestamp {
    /// Converts seconds since 1970-01-01T00:00:00Z (SOURCE_DATE_EPOCH) to UTC
    /// calendar time. Always UTC: an offset would make the bytes depend on the
    /// build machine's time zone.
    pub fn from_epoch(epoch: i64) -> Timestamp {
        let days = epoch.div_euclid(86_400);
        let secs = epoch.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Timestamp {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs % 3600 / 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// The 7-byte form used in directory records (ECMA-119 9.1.5) and in RRIP
    /// TF entries: years since 1900 in one byte, so 1900..=2155 only.
    pub fn record_bytes(&self) -> Result<[u8; 7]> {
        let since_1900 = self.year - 1900;
        if !(0..=255).contains(&since_1900) {
            bail!(
                "timestamp year {} is outside 1900..=2155, which ISO 9660 directory records can hold",
                self.year
            );
        }
        Ok([
            since_1900 as u8,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            0, // offset from GMT in 15-minute units: we always write UTC
        ])
    }

    /// The 17-byte digit form used in the volume descriptor (ECMA-119 8.4.26.1):
    /// "YYYYMMDDHHMMSScc" and a GMT offset byte.
    pub fn volume_bytes(&self) -> Result<[u8; 17]> {
        if !(1..=9999).contains(&self.year) {
            bail!(
                "timestamp year {} does not fit a volume descriptor",
                self.year
            );
        }
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        let mut b = [0u8; 17];
        b[..16].copy_from_slice(text.as_bytes());
        Ok(b)
    }
}

/// "Not specified" volume date (ECMA-119 8.4.26.1): sixteen '0' digits, offset 0.
pub const VOLUME_DATE_UNSET: [u8; 17] = *b"0000000000000000\0";

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), using
/// the 400-year era decomposition (exact for every i64 day count we accept).
pub(crate) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// Names

/// Maps a name to d-characters (ECMA-119 7.4.1: A-Z, 0-9, '_'): lowercase is
/// uppercased and anything else becomes '_'. The real name survives in the
/// Rock Ridge NM entry; this is only what plain ISO 9660 readers see.
pub fn d_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// ECMA-119 7.5.1 (levels 2 and 3): file name plus extension at most 30 characters.
const MAX_FILE_NAME_EXT: usize = 30;
/// ECMA-119 7.6.3 (levels 2 and 3): directory identifiers at most 31 characters.
const MAX_DIR_IDENT: usize = 31;
/// We keep extensions short so that the distinctive part of a name survives.
const MAX_EXT: usize = 8;

/// Gives every entry of one directory a unique ISO 9660 identifier.
///
/// Feed it the real names in a fixed order (the caller sorts them) and the
/// result is deterministic. Files and directories share one namespace, and a
/// file without extension collides with a directory of the same name, so no
/// two entries of a directory ever look alike to a plain ISO 9660 reader.
#[derive(Default)]
pub struct NameMangler {
    used: HashSet<String>,
}

impl NameMangler {
    pub fn new() -> Self {
        Self::default()
    }

    /// File identifier "NAME.EXT;1" (the '.' is always present, ECMA-119 7.5.1).
    pub fn file(&mut self, real: &str) -> String {
        // A leading dot marks a hidden file, not an extension.
        let (base, ext) = match real.rfind('.') {
            Some(i) if i > 0 => (&real[..i], &real[i + 1..]),
            _ => (real, ""),
        };
        let ext: String = d_chars(ext).chars().take(MAX_EXT).collect();
        let base = d_chars(base);
        let key = self.unique(&base, MAX_FILE_NAME_EXT - ext.len(), &ext);
        format!("{key};1")
    }

    /// Directory identifier "NAME" (no extension, no version).
    pub fn dir(&mut self, real: &str) -> String {
        let base = d_chars(real);
        let key = self.unique(&base, MAX_DIR_IDENT, "");
        key.trim_end_matches('.').to_string()
    }

    /// Picks `base` (cut to `max_base`) or, on a clash, `base_N` for the
    /// smallest N that is free; returns "BASE.EXT" (directories strip the dot).
    fn unique(&mut self, base: &str, max_base: usize, ext: &str) -> String {
        let make = |b: &str| format!("{b}.{ext}");
        let first: String = base.chars().take(max_base).collect();
        let candidate = make(&first);
        if self.used.insert(candidate.clone()) {
            return candidate;
        }
        for n in 1u64.. {
            let suffix = format!("_{n}");
            let keep = max_base.saturating_sub(suffix.len());
            let b: String = base.chars().take(keep).collect::<String>() + &suffix;
            let candidate = make(&b);
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
        unreachable!("u64 suffixes cannot run out")
    }
}

/// Order of directory records within a directory (ECMA-119 9.3): by file
/// name, then extension, each compared as if the shorter were padded with
/// spaces, then by version number, highest first.
pub fn cmp_identifiers(a: &[u8], b: &[u8]) -> Ordering {
    fn split(id: &[u8]) -> (&[u8], &[u8], u32) {
        let (nameext, version) = match id.iter().position(|&c| c == b';') {
            Some(i) => (&id[..i], &id[i + 1..]),
            None => (id, &[][..]),
        };
        let version = std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match nameext.iter().position(|&c| c == b'.') {
            Some(i) => (&nameext[..i], &nameext[i + 1..], version),
            None => (nameext, &[][..], version),
        }
    }
    fn padded(a: &[u8], b: &[u8]) -> Ordering {
        let n = a.len().max(b.len());
        (0..n)
            .map(|i| {
                let x = a.get(i).copied().unwrap_or(b' ');
                let y = b.get(i).copied().unwrap_or(b' ');
                x.cmp(&y)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
    let (an, ae, av) = split(a);
    let (bn, be, bv) = split(b);
    padded(an, bn)
        .then_with(|| padded(ae, be))
        .then_with(|| bv.cmp(&av))
}

// ---------------------------------------------------------------------------
// Directory records

/// Length of a directory record with an identifier of `ident_len` bytes and
/// `su_len` bytes of System Use (ECMA-119 9.1): 33 fixed bytes, the
/// identifier, a pad byte when the identifier length is even, the System Use
/// field, and a final pad so the record length is even.
pub fn record_len(ident_len: usize, su_len: usize) -> usize {
    let base = 33 + ident_len + usize::from(ident_len % 2 == 0);
    let len = base + su_len;
    len + len % 2
}

/// Room left for System Use bytes in a record with this identifier length,
/// such that the record (with its final pad) stays within 255 bytes.
pub fn system_use_room(ident_len: usize) -> usize {
    let base = 33 + ident_len + usize::from(ident_len % 2 == 0);
    (MAX_RECORD - 1).saturating_sub(base)
}

/// One directory record (ECMA-119 9.1).
#[derive(Debug, Clone)]
pub struct DirRecord<'a> {
    pub extent: u32,
    pub data_len: u32,
    pub date: [u8; 7],
    pub flags: u8,
    /// File identifier bytes: `[0]` for ".", `[1]` for "..", else d-characters.
    pub ident: &'a [u8],
    pub system_use: &'a [u8],
}

impl DirRecord<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let len = record_len(self.ident.len(), self.system_use.len());
        let mut r = Vec::with_capacity(len);
        r.push(len as u8); // LEN_DR; callers keep records <= 255 (system_use_room)
        r.push(0); // extended attribute record length: none
        r.extend_from_slice(&both_u32(self.extent));
        r.extend_from_slice(&both_u32(self.data_len));
        r.extend_from_slice(&self.date);
        r.push(self.flags);
        r.push(0); // file unit size: not interleaved
        r.push(0); // interleave gap size
        r.extend_from_slice(&both_u16(1)); // volume sequence number
        r.push(self.ident.len() as u8);
        r.extend_from_slice(self.ident);
        if self.ident.len() % 2 == 0 {
            r.push(0);
        }
        r.extend_from_slice(self.system_use);
        r.resize(len, 0);
        r
    }
}

/// The sections (LBA, length) of a file starting at `lba` with `size` bytes:
/// one for files up to 4 GiB - 1, else several of `MAX_EXTENT` bytes that
/// follow each other on disc (ISO 9660 level 3 multi-extent files). An empty
/// file is one section of length 0 at LBA 0.
pub fn file_sections(lba: u32, size: u64) -> Vec<(u32, u32)> {
    if size == 0 {
        return vec![(0, 0)];
    }
    if size <= u64::from(u32::MAX) {
        return vec![(lba, size as u32)];
    }
    let mut out = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(MAX_EXTENT);
        out.push((lba + (offset / SECTOR) as u32, len as u32));
        offset += len;
    }
    out
}

/// Packs records into a directory's sectors: a record never crosses a sector
/// boundary (ECMA-119 6.8.1.1); the rest of a sector is zero. Returns the
/// byte offset of every record and the number of sectors.
pub fn pack_records(lengths: &[usize]) -> (Vec<usize>, u64) {
    let sector = SECTOR as usize;
    let mut offsets = Vec::with_capacity(lengths.len());
    let mut pos = 0usize;
    for &len in lengths {
        if pos % sector + len > sector {
            pos = pos.div_ceil(sector) * sector;
        }
        offsets.push(pos);
        pos += len;
    }
    (offsets, sectors_for(pos as u64).max(1))
}

// ---------------------------------------------------------------------------
// Path tables

/// One path table record (ECMA-119 9.4), before encoding.
#[derive(Debug, Clone)]
pub struct PathRecord {
    pub ident: Vec<u8>,
    pub extent: u32,
    /// Directory number (1-based) of the parent; the root is its own parent.
    pub parent: u16,
}

/// Encodes the path table, little-endian ("L") or big-endian ("M") flavour.
/// Records must already be in path table order (by level, then parent
/// number, then identifier).
pub fn path_table(records: &[PathRecord], big_endian: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for r in records {
        t.push(r.ident.len() as u8);
        t.push(0); // extended attribute record length
        if big_endian {
            t.extend_from_slice(&r.extent.to_be_bytes());
            t.extend_from_slice(&r.parent.to_be_bytes());
        } else {
            t.extend_from_slice(&r.extent.to_le_bytes());
            t.extend_from_slice(&r.parent.to_le_bytes());
        }
        t.extend_from_slice(&r.ident);
        if r.ident.len() % 2 == 1 {
            t.push(0);
        }
    }
    t
}

// ---------------------------------------------------------------------------
// Volume descriptors

/// What goes into the primary volume descriptor.
#[derive(Debug, Clone)]
pub struct PrimaryVolume<'a> {
    /// Written as given, not uppercased: dracut's `CDLABEL=` compares it with
    /// what blkid reads, byte for byte.
    pub volume_id: &'a str,
    pub volume_space: u32,
    pub path_table_size: u32,
    pub l_path_table: u32,
    pub m_path_table: u32,
    /// The 34-byte record of the root directory.
    pub root_record: &'a [u8],
    pub date: [u8; 17],
}

fn put_padded(buf: &mut [u8], text: &str) {
    buf.fill(b' ');
    let n = text.len().min(buf.len());
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
}

/// Primary volume descriptor (ECMA-119 8.4), one sector.
pub fn primary_volume_descriptor(v: &PrimaryVolume) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = 1; // volume descriptor type: primary
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1; // version
    put_padded(&mut d[8..40], "LINUX"); // system identifier
    put_padded(&mut d[40..72], v.volume_id);
    d[80..88].copy_from_slice(&both_u32(v.volume_space));
    d[120..124].copy_from_slice(&both_u16(1)); // volume set size
    d[124..128].copy_from_slice(&both_u16(1)); // volume sequence number
    d[128..132].copy_from_slice(&both_u16(SECTOR as u16)); // logical block size
    d[132..140].copy_from_slice(&both_u32(v.path_table_size));
    d[140..144].copy_from_slice(&v.l_path_table.to_le_bytes());
    d[148..152].copy_from_slice(&v.m_path_table.to_be_bytes());
    d[156..156 + v.root_record.len()].copy_from_slice(v.root_record);
    put_padded(&mut d[190..318], v.volume_id); // volume set identifier
    put_padded(&mut d[318..446], ""); // publisher
    put_padded(&mut d[446..574], ""); // data preparer
    put_padded(&mut d[574..702], "UNDERCLOUD-LIVE"); // application
    put_padded(&mut d[702..739], ""); // copyright file
    put_padded(&mut d[739..776], ""); // abstract file
    put_padded(&mut d[776..813], ""); // bibliographic file
    d[813..830].copy_from_slice(&v.date); // creation
    d[830..847].copy_from_slice(&v.date); // modification
    d[847..864].copy_from_slice(&VOLUME_DATE_UNSET); // expiration
    d[864..881].copy_from_slice(&VOLUME_DATE_UNSET); // effective
    d[881] = 1; // file structure version
                // Application use: blanks, the state implantisomd5 expects before it
                // writes its media checksum there.
    d[APPLICATION_USE..APPLICATION_USE + APPLICATION_USE_LEN].fill(b' ');
    d
}

/// The 512-byte application use field of the primary volume descriptor
/// (ECMA-119 8.4.32), where the media checksum goes.
pub const APPLICATION_USE: usize = 883;
pub const APPLICATION_USE_LEN: usize = 512;

/// Volume descriptor set terminator (ECMA-119 8.3).
pub fn terminator() -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = 255;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d
}

// ---------------------------------------------------------------------------
// SUSP / Rock Ridge

fn susp_entry(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(4 + body.len());
    e.extend_from_slice(sig);
    e.push((4 + body.len()) as u8);
    e.push(1); // entry version
    e.extend_from_slice(body);
    e
}

/// SUSP "SP": announces SUSP; must open the System Use field of the root's "."
/// record (SUSP 1.12 5.3). Linux isofs and GRUB look exactly there.
pub fn susp_sp() -> Vec<u8> {
    susp_entry(b"SP", &[0xBE, 0xEF, 0])
}

/// SUSP "CE": the rest of this record's System Use entries is at `lba`,
/// `offset`, `len` bytes (SUSP 1.12 5.1).
pub fn susp_ce(lba: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&both_u32(lba));
    body.extend_from_slice(&both_u32(offset));
    body.extend_from_slice(&both_u32(len));
    susp_entry(b"CE", &body)
}

/// SUSP "ER" naming the Rock Ridge extension, with the identifier,
/// descriptor and source texts RRIP 1.12 prescribes.
pub fn susp_er_rrip() -> Vec<u8> {
    const ID: &[u8] = b"IEEE_P1282";
    const DES: &[u8] = b"THE IEEE P1282 PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS.";
    const SRC: &[u8] =
        b"PLEASE CONTACT THE IEEE STANDARDS DEPARTMENT, PISCATAWAY, NJ, USA FOR THE P1282 SPECIFICATION.";
    let mut body = vec![ID.len() as u8, DES.len() as u8, SRC.len() as u8, 1];
    body.extend_from_slice(ID);
    body.extend_from_slice(DES);
    body.extend_from_slice(SRC);
    susp_entry(b"ER", &body)
}

/// POSIX file mode bits for the PX entry.
pub const MODE_FILE: u32 = 0o100_644;
pub const MODE_DIR: u32 = 0o040_755;

/// RRIP "PX" (1.12 form, 44 bytes, with the file serial number).
pub fn rr_px(mode: u32, nlink: u32, serial: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(40);
    body.extend_from_slice(&both_u32(mode));
    body.extend_from_slice(&both_u32(nlink));
    body.extend_from_slice(&both_u32(0)); // uid root
    body.extend_from_slice(&both_u32(0)); // gid root
    body.extend_from_slice(&both_u32(serial));
    susp_entry(b"PX", &body)
}

/// RRIP "TF" with modification, access and attribute-change times, all the
/// same (short 7-byte form).
pub fn rr_tf(date: [u8; 7]) -> Vec<u8> {
    const MODIFY: u8 = 0x02;
    const ACCESS: u8 = 0x04;
    const ATTRIBUTES: u8 = 0x08;
    let mut body = vec![MODIFY | ACCESS | ATTRIBUTES];
    for _ in 0..3 {
        body.extend_from_slice(&date);
    }
    susp_entry(b"TF", &body)
}

/// RRIP "NM" entries carrying `name`. An entry holds at most 250 name bytes,
/// so longer names are split, every piece but the last with the CONTINUE flag.
pub fn rr_nm(name: &[u8]) -> Vec<Vec<u8>> {
    const CONTINUE: u8 = 0x01;
    const MAX_PIECE: usize = 255 - 5;
    let pieces: Vec<&[u8]> = name.chunks(MAX_PIECE).collect();
    let last = pieces.len().saturating_sub(1);
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut body = vec![if i < last { CONTINUE } else { 0 }];
            body.extend_from_slice(piece);
            susp_entry(b"NM", &body)
        })
        .collect()
}

/// A record's System Use entries split between the record itself and a
/// continuation area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemUse {
    /// Entries written in the record (a CE entry is appended after them when
    /// `continuation` is not empty).
    pub inline: Vec<u8>,
    /// Entries that go to the continuation area.
    pub continuation: Vec<u8>,
}

impl SystemUse {
    /// Bytes the System Use field takes in the record itself.
    pub fn inline_len(&self) -> usize {
        self.inline.len()
            + if self.continuation.is_empty() {
                0
            } else {
                CE_LEN
            }
    }
}

/// Splits `entries` (in order) so that what stays in the record fits `room`
/// bytes; the first entry that does not fit, and everything after it, moves to
/// a continuation area reached through a CE entry. Keeping the order matters:
/// SP must stay first, and NM pieces must be read in sequence.
pub fn layout_system_use(entries: &[Vec<u8>], room: usize) -> Result<SystemUse> {
    let total: usize = entries.iter().map(Vec::len).sum();
    if total <= room {
        return Ok(SystemUse {
            inline: entries.concat(),
            continuation: Vec::new(),
        });
    }
    let mut inline = Vec::new();
    let mut rest = entries.iter();
    for e in rest.by_ref() {
        if inline.len() + e.len() + CE_LEN > room {
            let mut continuation = e.clone();
            for e in rest.by_ref() {
                continuation.extend_from_slice(e);
            }
            // Linux isofs rejects a continuation area that crosses a block.
            if continuation.len() > SECTOR as usize {
                bail!(
                    "rock ridge entries of {} bytes do not fit one continuation sector",
                    continuation.len()
                );
            }
            return Ok(SystemUse {
                inline,
                continuation,
            });
        }
        inline.extend_from_slice(e);
    }
    unreachable!("total exceeded room, so some entry cannot fit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_endian_fields() {
        assert_eq!(both_u16(0x0102), [0x02, 0x01, 0x01, 0x02]);
        assert_eq!(
            both_u32(0x0102_0304),
            [0x04, 0x03, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04]
        );
        assert_eq!(both_u16(2048), [0x00, 0x08, 0x08, 0x00]);
    }

    #[test]
    fn epoch_to_calendar() {
        let t = Timestamp::from_epoch(0);
        assert_eq!((t.year, t.month, t.day, t.hour), (1970, 1, 1, 0));
        // 2024-02-29T12:34:56Z, a leap day.
        let t = Timestamp::from_epoch(1_709_210_096);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 2, 29, 12, 34, 56)
        );
        assert_eq!(t.record_bytes().unwrap(), [124, 2, 29, 12, 34, 56, 0]);
        assert_eq!(&t.volume_bytes().unwrap(), b"2024022912345600\0");
        // Before 1970 works too; 1969-12-31T23:59:59Z.
        let t = Timestamp::from_epoch(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (1969, 12, 31, 23, 59, 59)
        );
        // Directory records cannot hold years after 2155.
        assert!(Timestamp::from_epoch(6_000_000_000).record_bytes().is_err());
    }

    #[test]
    fn names_become_d_characters() {
        let mut m = NameMangler::new();
        assert_eq!(m.file("squashfs.img"), "SQUASHFS.IMG;1");
        assert_eq!(m.file("BOOTX64.EFI"), "BOOTX64.EFI;1");
        assert_eq!(m.file("grub.cfg"), "GRUB.CFG;1");
        assert_eq!(m.file("README"), "README.;1");
        assert_eq!(m.file(".hidden"), "_HIDDEN.;1");
        assert_eq!(m.file("my-file.tar.gz"), "MY_FILE_TAR.GZ;1");
        assert_eq!(m.file("ünï.x"), "_N_.X;1");
        assert_eq!(m.dir("LiveOS"), "LIVEOS");
        assert_eq!(m.dir("x86_64.d"), "X86_64_D");
    }

    #[test]
    fn mangled_names_are_unique_and_bounded() {
        let mut m = NameMangler::new();
        assert_eq!(m.file("a.txt"), "A.TXT;1");
        assert_eq!(m.file("A.txt"), "A_1.TXT;1");
        assert_eq!(m.file("a-.txt"), "A_.TXT;1");
        assert_eq!(m.file("a+.txt"), "A__1.TXT;1");
        // A directory named like an extension-less file clashes with it.
        assert_eq!(m.file("boot"), "BOOT.;1");
        assert_eq!(m.dir("Boot"), "BOOT_1");
        let long = "x".repeat(80);
        let a = m.file(&format!("{long}.config"));
        let b = m.file(&format!("{long}.CONFIG"));
        assert_ne!(a, b);
        for id in [&a, &b] {
            let nameext = id.trim_end_matches(";1");
            assert!(nameext.len() <= 31, "{id}"); // 30 + the '.'
        }
        let d1 = m.dir(&long);
        let d2 = m.dir(&long.to_uppercase());
        assert_ne!(d1, d2);
        assert!(d1.len() <= 31 && d2.len() <= 31);
    }

    #[test]
    fn identifier_order_pads_with_spaces() {
        // "A.;1" sorts before "A0.;1" because ' ' < '0' after padding.
        let mut ids: Vec<&[u8]> = vec![b"B.;1", b"A0.;1", b"A.B;1", b"A.;1", b"A_1", b"A"];
        ids.sort_by(|a, b| cmp_identifiers(a, b));
        let want: Vec<&[u8]> = vec![b"A.;1", b"A", b"A.B;1", b"A0.;1", b"A_1", b"B.;1"];
        // "A.;1" and "A" compare equal by name and extension; the version
        // (1 vs none) breaks the tie, highest first.
        assert_eq!(ids, want);
        // Extensions compare after names: "AB.C" vs "A.Z" -> name "AB" > "A ".
        assert_eq!(cmp_identifiers(b"AB.C;1", b"A.Z;1"), Ordering::Greater);
    }

    #[test]
    fn directory_record_layout() {
        let date = [124, 2, 29, 12, 34, 56, 0];
        let su = [b'X'; 5];
        let r = DirRecord {
            extent: 0x1234,
            data_len: 4096,
            date,
            flags: FLAG_DIRECTORY,
            ident: b"EFI",
            system_use: &su,
        }
        .encode();
        // 33 + 3 (odd ident, no pad) + 5 + 1 final pad.
        assert_eq!(r.len(), 42);
        assert_eq!(r[0], 42);
        assert_eq!(&r[2..10], &both_u32(0x1234));
        assert_eq!(&r[10..18], &both_u32(4096));
        assert_eq!(&r[18..25], &date);
        assert_eq!(r[25], FLAG_DIRECTORY);
        assert_eq!(&r[28..32], &both_u16(1));
        assert_eq!(r[32], 3);
        assert_eq!(&r[33..36], b"EFI");
        assert_eq!(&r[36..41], &su);
        assert_eq!(r[41], 0);

        // Even identifier length gets a pad byte before System Use.
        let r = DirRecord {
            extent: 1,
            data_len: 2,
            date,
            flags: 0,
            ident: b"AB.;1X",
            system_use: &[],
        }
        .encode();
        assert_eq!(r.len(), 40);
        assert_eq!(r[39], 0);
        assert_eq!(record_len(6, 0), 40);
        assert_eq!(record_len(1, 0), 34); // "." in a PVD root record
    }

    #[test]
    fn multi_extent_sections() {
        assert_eq!(file_sections(100, 0), vec![(0, 0)]);
        assert_eq!(file_sections(100, 5), vec![(100, 5)]);
        assert_eq!(
            file_sections(100, u64::from(u32::MAX)),
            vec![(100, u32::MAX)]
        );
        // 4 GiB exactly: one full MAX_EXTENT section, then the remainder,
        // which starts right after the first on disc.
        let size = 1u64 << 32;
        let s = file_sections(100, size);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], (100, MAX_EXTENT as u32));
        assert_eq!(s[1], (100 + (MAX_EXTENT / SECTOR) as u32, 2048));
        let total: u64 = s.iter().map(|&(_, l)| u64::from(l)).sum();
        assert_eq!(total, size);
        // 10 GiB: three sections.
        let s = file_sections(7, 10 << 30);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().map(|&(_, l)| u64::from(l)).sum::<u64>(),
            10u64 << 30
        );
    }

    #[test]
    fn multi_extent_records_carry_the_flag() {
        // What hybrid.rs emits for a multi-extent file: every record but the
        // last has bit 7 set; all share the identifier.
        let sections = file_sections(50, 5 << 30);
        let records: Vec<Vec<u8>> = sections
            .iter()
            .enumerate()
            .map(|(i, &(lba, len))| {
                let flags = if i + 1 < sections.len() {
                    FLAG_MULTI_EXTENT
                } else {
                    0
                };
                DirRecord {
                    extent: lba,
                    data_len: len,
                    date: [0; 7],
                    flags,
                    ident: b"SQUASHFS.IMG;1",
                    system_use: &[],
                }
                .encode()
            })
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0][25], FLAG_MULTI_EXTENT);
        assert_eq!(records[1][25], 0);
        assert_eq!(&records[0][10..18], &both_u32(MAX_EXTENT as u32));
        let second_lba = u32::from_le_bytes(records[1][2..6].try_into().unwrap());
        assert_eq!(second_lba, 50 + (MAX_EXTENT / SECTOR) as u32);
    }

    #[test]
    fn records_do_not_cross_sectors() {
        let (offsets, sectors) = pack_records(&[34, 34, 250, 250, 250, 250, 250, 250, 250, 250]);
        assert_eq!(offsets[..3], [0, 34, 68]);
        // 68 + 7*250 = 1818; the next 250 would cross 2048.
        assert_eq!(offsets[9], 2048);
        assert_eq!(sectors, 2);
        assert_eq!(pack_records(&[]).1, 1);
    }

    #[test]
    fn path_table_both_flavours() {
        let recs = vec![
            PathRecord {
                ident: vec![0],
                extent: 20,
                parent: 1,
            },
            PathRecord {
                ident: b"EFI".to_vec(),
                extent: 21,
                parent: 1,
            },
            PathRecord {
                ident: b"BOOT".to_vec(),
                extent: 22,
                parent: 2,
            },
        ];
        let l = path_table(&recs, false);
        let m = path_table(&recs, true);
        assert_eq!(l.len(), 10 + 12 + 12);
        assert_eq!(l.len(), m.len());
        assert_eq!(&l[0..10], &[1, 0, 20, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&m[0..10], &[1, 0, 0, 0, 0, 20, 0, 1, 0, 0]);
        assert_eq!(&l[10..22], &[3, 0, 21, 0, 0, 0, 1, 0, b'E', b'F', b'I', 0]);
        assert_eq!(
            &m[22..34],
            &[4, 0, 0, 0, 0, 22, 0, 2, b'B', b'O', b'O', b'T']
        );
    }

    #[test]
    fn primary_volume_descriptor_fields() {
        let root = DirRecord {
            extent: 20,
            data_len: 2048,
            date: [0; 7],
            flags: FLAG_DIRECTORY,
            ident: &[0],
            system_use: &[],
        }
        .encode();
        let d = primary_volume_descriptor(&PrimaryVolume {
            volume_id: "Undercloud-Live_1",
            volume_space: 1000,
            path_table_size: 10,
            l_path_table: 19,
            m_path_table: 20,
            root_record: &root,
            date: *b"2024022912345600\0",
        });
        assert_eq!(d.len(), 2048);
        assert_eq!(&d[0..7], b"\x01CD001\x01");
        assert_eq!(&d[40..72], b"Undercloud-Live_1               ");
        assert_eq!(&d[80..88], &both_u32(1000));
        assert_eq!(&d[128..132], &both_u16(2048));
        assert_eq!(&d[140..144], &19u32.to_le_bytes());
        assert_eq!(&d[148..152], &20u32.to_be_bytes());
        assert_eq!(&d[156..190], &root[..]);
        assert_eq!(&d[813..830], b"2024022912345600\0");
        assert_eq!(d[881], 1);
        let t = terminator();
        assert_eq!(&t[0..7], b"\xffCD001\x01");
    }

    #[test]
    fn rock_ridge_entries() {
        let sp = susp_sp();
        assert_eq!(sp, b"SP\x07\x01\xbe\xef\x00");

        let px = rr_px(MODE_FILE, 1, 7);
        assert_eq!(px.len(), 44);
        assert_eq!(&px[0..4], b"PX\x2c\x01");
        assert_eq!(&px[4..12], &both_u32(0o100644));
        assert_eq!(&px[36..44], &both_u32(7));

        let tf = rr_tf([1, 2, 3, 4, 5, 6, 0]);
        assert_eq!(tf.len(), 26);
        assert_eq!(&tf[0..5], b"TF\x1a\x01\x0e");
        assert_eq!(&tf[5..12], &[1, 2, 3, 4, 5, 6, 0]);

        let nm = rr_nm(b"squashfs.img");
        assert_eq!(nm.len(), 1);
        assert_eq!(nm[0], b"NM\x11\x01\x00squashfs.img");

        let long = vec![b'a'; 255];
        let nm = rr_nm(&long);
        assert_eq!(nm.len(), 2);
        assert_eq!(nm[0].len(), 255);
        assert_eq!(nm[0][4], 1); // CONTINUE
        assert_eq!(nm[1].len(), 5 + 5);
        assert_eq!(nm[1][4], 0);

        let ce = susp_ce(30, 64, 237);
        assert_eq!(ce.len(), CE_LEN);
        assert_eq!(&ce[4..12], &both_u32(30));
        assert_eq!(&ce[12..20], &both_u32(64));
        assert_eq!(&ce[20..28], &both_u32(237));

        let er = susp_er_rrip();
        assert_eq!(er[2] as usize, er.len());
        assert_eq!(&er[4..8], &[10, 73, 94, 1]);
        assert_eq!(&er[8..18], b"IEEE_P1282");
    }

    #[test]
    fn system_use_overflows_into_continuation() {
        let entries = vec![susp_sp(), rr_px(MODE_DIR, 2, 1), susp_er_rrip()];
        let su = layout_system_use(&entries, system_use_room(1)).unwrap();
        assert_eq!(su.inline.len(), 7 + 44);
        assert_eq!(su.continuation, susp_er_rrip());
        assert_eq!(su.inline_len(), 7 + 44 + CE_LEN);
        assert!(record_len(1, su.inline_len()) <= MAX_RECORD);

        let small = vec![rr_px(MODE_FILE, 1, 2), rr_tf([0; 7])];
        let su = layout_system_use(&small, system_use_room(14)).unwrap();
        assert!(su.continuation.is_empty());
        assert_eq!(su.inline.len(), 70);

        // A 255-byte name goes (partly) to the continuation area.
        let mut long = vec![rr_px(MODE_FILE, 1, 2), rr_tf([0; 7])];
        long.extend(rr_nm(&[b'n'; 255]));
        let su = layout_system_use(&long, system_use_room(31)).unwrap();
        assert!(!su.continuation.is_empty());
        assert!(record_len(31, su.inline_len()) <= MAX_RECORD);
        assert_eq!(su.inline.len() + su.continuation.len(), 44 + 26 + 265);
    }
}
