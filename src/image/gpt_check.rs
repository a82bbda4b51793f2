//! Whole-medium checks of a GPT disk (an image file or a device): both
//! headers, their CRCs, the partition entries and where every partition
//! lies, against the bytes that are really there.
//!
//! The media checksum only covers the ISO volume: a copy cut short after
//! the volume (the persistence partition and the backup GPT missing) still
//! passes it. These checks catch that, and tables edited by hand or by a
//! broken tool (overlapping, reversed or out-of-range entries), which the
//! `gpt` crate reads without complaint. Everything is parsed here from raw
//! bytes, nothing is trusted before it is checked, and every problem is a
//! [`Problem`], so `verify` can refuse and `inspect` can warn.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};

use anyhow::{Context, Result};

use super::gpt::crc32;
use super::layout::LBA;

/// Largest entry count accepted (as `gpt::check_headers`): real tools
/// write 128; a larger count only makes us read more.
const MAX_ENTRIES: u32 = 1024;
/// The one entry size the specification's tools write (and the gpt crate
/// reads).
const ENTRY_SIZE: u32 = 128;

/// One partition entry, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based entry number, as `inspect` and the gpt crate count.
    pub number: u32,
    pub name: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (n, first, last) = (self.number, self.first_lba, self.last_lba);
        match self.name.as_str() {
            "" => write!(f, "partition {n} (LBA {first}..{last})"),
            name => write!(f, "partition {n} ({name}, LBA {first}..{last})"),
        }
    }
}

/// What is wrong with a medium's GPT. Each displays as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Shorter than the primary header says (its backup LBA + 1 sectors).
    Truncated {
        expected: u64,
        actual: u64,
        holder: &'static str,
    },
    /// The primary header cannot be trusted: nothing else is checked.
    Primary(String),
    /// The primary header's partition entry array.
    PrimaryEntries(String),
    Backup {
        lba: u64,
        what: String,
    },
    Reversed(Part),
    OutsideUsable {
        part: Part,
        first: u64,
        last: u64,
    },
    PastEnd {
        part: Part,
        end: u64,
        actual: u64,
        holder: &'static str,
    },
    Overlap(Part, Part),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Problem::Truncated {
                expected,
                actual,
                holder,
            } => write!(
                f,
                "truncated: the GPT says the medium is {expected} bytes, the {holder} has \
                 {actual} (a copy that did not finish?)"
            ),
            Problem::Primary(why) => write!(f, "the primary GPT header is corrupt: {why}"),
            Problem::PrimaryEntries(why) => {
                write!(f, "the primary GPT's partition entries {why}")
            }
            Problem::Backup { lba, what } => write!(f, "the backup GPT header (LBA {lba}) {what}"),
            Problem::Reversed(p) => write!(f, "{p} is reversed: it starts after it ends"),
            Problem::OutsideUsable { part, first, last } => write!(
                f,
                "{part} lies outside the usable LBAs {first}..{last} of the GPT"
            ),
            Problem::PastEnd {
                part,
                end,
                actual,
                holder,
            } => write!(
                f,
                "{part} ends at byte {end}, past the end of the {holder} ({actual} bytes)"
            ),
            Problem::Overlap(a, b) => write!(f, "{a} and {b} overlap"),
        }
    }
}

/// The outcome of [`check`] on a medium that has a GPT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// The medium's size as the primary header has it (None when the
    /// header is too broken to say).
    pub expected_bytes: Option<u64>,
    /// Used partition entries.
    pub partitions: usize,
    /// Most fundamental first: a truncation explains what follows it.
    pub problems: Vec<Problem>,
}

/// The fields of a GPT header (UEFI 2.x, 5.3.2) that these checks use.
struct Header {
    size: u32,
    crc: u32,
    current: u64,
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

impl Header {
    /// None when the sector carries no GPT signature.
    fn parse(b: &[u8; LBA as usize]) -> Option<Header> {
        (&b[..8] == b"EFI PART").then(|| Header {
            size: le32(b, 12),
            crc: le32(b, 16),
            current: le64(b, 24),
            alternate: le64(b, 32),
            first_usable: le64(b, 40),
            last_usable: le64(b, 48),
            entries_lba: le64(b, 72),
            count: le32(b, 80),
            entry_size: le32(b, 84),
            entries_crc: le32(b, 88),
        })
    }

    /// Why the header read from `b` at LBA `at` cannot be trusted, if it
    /// cannot. Checked in this order so that later checks may index `b`
    /// and multiply counts without overflow.
    fn fault(&self, b: &[u8; LBA as usize], at: u64) -> Option<String> {
        if !(92..=LBA as u32).contains(&self.size) {
            return Some(format!("header size {} (must be 92 to 512)", self.size));
        }
        // The CRC covers the header's own size with its CRC field zeroed.
        let mut h = b[..self.size as usize].to_vec();
        h[16..20].fill(0);
        let computed = crc32(&h);
        if computed != self.crc {
            return Some(format!(
                "its CRC is {:#010x}, its bytes give {computed:#010x}",
                self.crc
            ));
        }
        if self.current != at {
            return Some(format!("it says it is at LBA {}", self.current));
        }
        if self.entry_size != ENTRY_SIZE || self.count == 0 || self.count > MAX_ENTRIES {
            return Some(format!(
                "{} partition entries of {} bytes (must be 1 to {MAX_ENTRIES} of {ENTRY_SIZE})",
                self.count, self.entry_size
            ));
        }
        let table = self.table_lbas();
        // Entries on the MBR, the primary header or this header would be
        // overwritten by (or overwrite) them.
        if self.entries_lba < 2
            || (self.entries_lba..self.entries_lba.saturating_add(table)).contains(&at)
        {
            return Some(format!(
                "its partition entries start at LBA {}",
                self.entries_lba
            ));
        }
        None
    }

    /// LBAs of the entry array (after [`Header::fault`]: at most 256).
    fn table_lbas(&self) -> u64 {
        (u64::from(self.count) * u64::from(ENTRY_SIZE)).div_ceil(LBA)
    }
}

/// Sector `lba` of the medium, or None when it lies past `len`.
fn read_lba(file: &File, len: u64, lba: u64) -> Result<Option<[u8; LBA as usize]>> {
    let Some(at) = lba
        .checked_mul(LBA)
        .filter(|at| at.saturating_add(LBA) <= len)
    else {
        return Ok(None);
    };
    let mut b = [0u8; LBA as usize];
    file.read_exact_at(&mut b, at)
        .with_context(|| format!("reading LBA {lba}"))?;
    Ok(Some(b))
}

/// The entry array of a header that passed [`Header::fault`], or None
/// when it does not lie wholly inside `len` bytes.
fn read_entries(file: &File, len: u64, h: &Header) -> Result<Option<Vec<u8>>> {
    let bytes = u64::from(h.count) * u64::from(ENTRY_SIZE);
    let Some(at) = h.entries_lba.checked_mul(LBA) else {
        return Ok(None);
    };
    if at.checked_add(bytes).map_or(true, |end| end > len) {
        return Ok(None);
    }
    let mut b = vec![0u8; bytes as usize];
    file.read_exact_at(&mut b, at)
        .with_context(|| format!("reading the GPT entries at LBA {}", h.entries_lba))?;
    Ok(Some(b))
}

/// "file" or "device", for messages about what the medium lacks.
fn holder(file: &File) -> &'static str {
    match file.metadata() {
        Ok(m) if m.file_type().is_block_device() => "device",
        _ => "file",
    }
}

/// Checks the GPT of a medium of `len` bytes (an image file, or a block
/// device whose size the caller measured). `Ok(None)`: no GPT at all (a
/// plain ISO, a ramdisk). Errors only for failed reads; what is wrong
/// with the medium is in [`Findings::problems`].
pub fn check(file: &File, len: u64) -> Result<Option<Findings>> {
    let Some(sector) = read_lba(file, len, 1)? else {
        return Ok(None);
    };
    let Some(primary) = Header::parse(&sector) else {
        return Ok(None);
    };
    let mut f = Findings::default();
    if let Some(why) = primary.fault(&sector, 1).or_else(|| usable_fault(&primary)) {
        f.problems.push(Problem::Primary(why));
        return Ok(Some(f));
    }
    let holder = holder(file);
    // alternate >= 2 here (usable_fault), and < u64::MAX / LBA checked.
    let expected = (primary.alternate + 1) * LBA;
    f.expected_bytes = Some(expected);
    if len < expected {
        f.problems.push(Problem::Truncated {
            expected,
            actual: len,
            holder,
        });
    }
    let entries = read_entries(file, len, &primary)?;
    match &entries {
        None => f.problems.push(Problem::PrimaryEntries(format!(
            "(LBA {}, {} bytes) lie past the end of the {holder} ({len} bytes)",
            primary.entries_lba,
            primary.table_lbas() * LBA
        ))),
        Some(e) if crc32(e) != primary.entries_crc => f.problems.push(Problem::PrimaryEntries(
            format!("do not match their CRC {:#010x}", primary.entries_crc),
        )),
        Some(_) => {}
    }
    if let Some(p) = check_backup(file, len, &primary, holder)? {
        f.problems.push(p);
    }
    if let Some(e) = &entries {
        let parts = parse_entries(e);
        f.partitions = parts.len();
        check_partitions(&parts, &primary, len, holder, &mut f.problems);
    }
    Ok(Some(f))
}

/// A primary header whose usable range or backup position contradicts
/// itself: without these, sizes computed from it could overflow or make
/// no sense.
fn usable_fault(h: &Header) -> Option<String> {
    let entries_end = h.entries_lba.saturating_add(h.table_lbas());
    if h.alternate < 2 || h.alternate >= u64::MAX / LBA {
        return Some(format!("it puts the backup header at LBA {}", h.alternate));
    }
    if h.first_usable > h.last_usable
        || h.first_usable < entries_end
        || h.last_usable >= h.alternate
    {
        return Some(format!(
            "usable LBAs {}..{} with its entries at LBA {}..{} and the backup at LBA {}",
            h.first_usable,
            h.last_usable,
            h.entries_lba,
            entries_end - 1,
            h.alternate
        ));
    }
    None
}

/// The backup header at the primary's alternate LBA: present, intact,
/// pointing back at LBA 1 and describing the same entries. It is looked
/// for where the primary says, not at the medium's last LBA: an image
/// written to a larger stick keeps its backup where the image ends.
fn check_backup(file: &File, len: u64, primary: &Header, holder: &str) -> Result<Option<Problem>> {
    let lba = primary.alternate;
    let problem = |what: String| Ok(Some(Problem::Backup { lba, what }));
    let Some(b) = read_lba(file, len, lba)? else {
        let at = lba * LBA;
        return problem(format!(
            "is missing: bytes {at}..{} lie past the end of the {holder} ({len} bytes)",
            at + LBA
        ));
    };
    let Some(h) = Header::parse(&b) else {
        return problem("is missing: there is no GPT signature there".into());
    };
    if let Some(why) = h.fault(&b, lba) {
        return problem(format!("is corrupt: {why}"));
    }
    if h.alternate != 1 {
        return problem(format!("points back at LBA {} instead of 1", h.alternate));
    }
    if h.entries_crc != primary.entries_crc || h.count != primary.count {
        return problem(format!(
            "describes other partition entries ({} with CRC {:#010x}; the primary: {} with {:#010x})",
            h.count, h.entries_crc, primary.count, primary.entries_crc
        ));
    }
    match read_entries(file, len, &h)? {
        None => problem(format!(
            "has its entries at LBA {}, past the end of the {holder}",
            h.entries_lba
        )),
        Some(e) if crc32(&e) != h.entries_crc => {
            problem("has partition entries that do not match their CRC".into())
        }
        Some(_) => Ok(None),
    }
}

/// The used entries (a non-zero type GUID) of an entry array.
fn parse_entries(entries: &[u8]) -> Vec<Part> {
    let mut parts = Vec::new();
    for (i, e) in entries.chunks_exact(ENTRY_SIZE as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        // The name comes from the disk and goes into one-line messages:
        // no newlines or terminal escapes.
        let name = String::from_utf16_lossy(&units)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        parts.push(Part {
            // At most MAX_ENTRIES entries: the index fits a u32.
            number: i as u32 + 1,
            name,
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
        });
    }
    parts
}

/// Reversed entries, entries outside the usable LBAs or past the end of
/// the medium, and overlaps between the others.
fn check_partitions(
    parts: &[Part],
    h: &Header,
    len: u64,
    holder: &'static str,
    out: &mut Vec<Problem>,
) {
    for p in parts {
        if p.first_lba > p.last_lba {
            out.push(Problem::Reversed(p.clone()));
            continue;
        }
        if p.first_lba < h.first_usable || p.last_lba > h.last_usable {
            out.push(Problem::OutsideUsable {
                part: p.clone(),
                first: h.first_usable,
                last: h.last_usable,
            });
        }
        let end = p.last_lba.saturating_add(1).saturating_mul(LBA);
        if end > len {
            out.push(Problem::PastEnd {
                part: p.clone(),
                end,
                actual: len,
                holder,
            });
        }
    }
    let mut sorted: Vec<&Part> = parts.iter().filter(|p| p.first_lba <= p.last_lba).collect();
    sorted.sort_by_key(|p| (p.first_lba, p.last_lba));
    // Sorted by start, a partition overlaps an earlier one exactly when it
    // starts before the furthest end seen so far.
    let mut furthest: Option<&Part> = None;
    for p in sorted {
        if let Some(w) = furthest {
            if p.first_lba <= w.last_lba {
                out.push(Problem::Overlap(w.clone(), p.clone()));
            }
        }
        if furthest.map_or(true, |w| p.last_lba > w.last_lba) {
            furthest = Some(p);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::gpt::{protective_mbr, write_gpt, PartitionSpec};
    use crate::io::MIB;
    use std::path::{Path, PathBuf};

    /// A 16 MiB GPT disk as the hybrid writer lays one out: an ESP, a
    /// root, and a persistence partition running to the last usable LBA.
    fn disk(dir: &Path) -> PathBuf {
        let p = dir.join("disk.img");
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(16 * MIB).unwrap();
        let part = |name: &str, first: u64, last: u64| PartitionSpec {
            name: name.into(),
            type_guid: gpt::partition_types::LINUX_FS,
            guid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()),
            first_lba: first,
            last_lba: last,
        };
        let lbas = 16 * MIB / LBA;
        let parts = [
            part("esp", 2048, 4095),
            part("root", 4096, 8191),
            part("persistence", 8192, lbas - 34),
        ];
        let mbr = protective_mbr(16 * MIB, None, [1, 2, 3, 4]).unwrap();
        write_gpt(&mut f, &p, uuid::Uuid::nil(), &parts, &mbr).unwrap();
        p
    }

    fn findings(p: &Path) -> Option<Findings> {
        let f = File::open(p).unwrap();
        let len = f.metadata().unwrap().len();
        check(&f, len).unwrap()
    }

    fn problems(p: &Path) -> Vec<String> {
        findings(p)
            .expect("a GPT")
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn rw(p: &Path) -> File {
        File::options().read(true).write(true).open(p).unwrap()
    }

    /// Writes `value` at `field` of the header at `lba`, then fixes its CRC.
    pub(crate) fn patch_header(p: &Path, lba: u64, field: usize, value: &[u8]) {
        let f = rw(p);
        let mut h = [0u8; 92];
        f.read_exact_at(&mut h, lba * LBA).unwrap();
        h[field..field + value.len()].copy_from_slice(value);
        h[16..20].fill(0);
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, lba * LBA).unwrap();
    }

    /// Edits the entry arrays of both headers alike and recomputes every
    /// CRC: a table a tool wrote, wrong but consistent.
    pub(crate) fn edit_entries(p: &Path, edit: impl Fn(&mut [u8])) {
        let last = std::fs::metadata(p).unwrap().len() / LBA - 1;
        for lba in [1, last] {
            let f = rw(p);
            let mut h = [0u8; 92];
            f.read_exact_at(&mut h, lba * LBA).unwrap();
            let at = le64(&h, 72) * LBA;
            let mut e = vec![0u8; 128 * 128];
            f.read_exact_at(&mut e, at).unwrap();
            edit(&mut e);
            f.write_all_at(&e, at).unwrap();
            patch_header(p, lba, 88, &crc32(&e).to_le_bytes());
        }
    }

    /// Sets the first and last LBA of entry `n` (1-based).
    pub(crate) fn set_range(e: &mut [u8], n: usize, first: u64, last: u64) {
        let at = (n - 1) * 128;
        e[at + 32..at + 40].copy_from_slice(&first.to_le_bytes());
        e[at + 40..at + 48].copy_from_slice(&last.to_le_bytes());
    }

    #[test]
    fn an_intact_disk_has_no_problems() {
        let t = tempfile::tempdir().unwrap();
        let p = disk(t.path());
        let f = findings(&p).unwrap();
        assert_eq!(f.problems, []);
        assert_eq!((f.expected_bytes, f.partitions), (Some(16 * MIB), 3));
    }

    #[test]
    fn no_gpt_is_not_a_problem() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("plain");
        std::fs::write(&p, vec![0u8; 64 << 10]).unwrap();
        assert_eq!(findings(&p), None);
        std::fs::write(&p, b"EFI PART").unwrap();
        assert_eq!(findings(&p), None);
    }

    /// The reported bug: a copy cut at 50% loses the persistence
    /// partition's end and the backup GPT.
    #[test]
    fn a_copy_cut_in_half_is_truncated() {
        let t = tempfile::tempdir().unwrap();
        let p = disk(t.path());
        rw(&p).set_len(8 * MIB).unwrap();
        let got = problems(&p);
        assert_eq!(
            got[0],
            "truncated: the GPT says the medium is 16777216 bytes, the file has 8388608 \
             (a copy that did not finish?)"
        );
        let all = got.join("\n");
        assert!(
            all.contains("backup GPT header (LBA 32767) is missing"),
            "{all}"
        );
        assert!(
            all.contains("partition 3 (persistence, LBA 8192..32734) ends at byte 16760320"),
            "{all}"
        );
        assert_eq!(got.len(), 3, "{all}");
        // Cut inside the backup entries only: still truncated.
        let p = t.path().join("disk.img");
        rw(&p).set_len(16 * MIB - 4096).unwrap();
        assert!(problems(&p)[0].starts_with("truncated:"));
    }

    #[test]
    fn a_damaged_backup_header_is_named() {
        let t = tempfile::tempdir().unwrap();
        let last = 16 * MIB / LBA - 1;
        for (field, value, says) in [
            (0, &b"EFI FART"[..], "is missing: there is no GPT signature"),
            (24, &0u64.to_le_bytes()[..], "it says it is at LBA 0"),
            (
                32,
                &7u64.to_le_bytes()[..],
                "points back at LBA 7 instead of 1",
            ),
            (
                88,
                &1u32.to_le_bytes()[..],
                "describes other partition entries",
            ),
        ] {
            let p = disk(t.path());
            patch_header(&p, last, field, value);
            let got = problems(&p);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(got[0].contains(says), "{}", got[0]);
            std::fs::remove_file(&p).unwrap();
        }
        // A flipped byte without a fixed CRC.
        let p = disk(t.path());
        rw(&p).write_all_at(&[0xff], last * LBA + 40).unwrap();
        assert!(problems(&p)[0].contains("is corrupt: its CRC is"));
    }

    #[test]
    fn overlapping_reversed_and_outside_entries_are_named() {
        let t = tempfile::tempdir().unwrap();
        let p = disk(t.path());
        edit_entries(&p, |e| set_range(e, 2, 4000, 8191));
        assert_eq!(
            problems(&p),
            ["partition 1 (esp, LBA 2048..4095) and partition 2 (root, LBA 4000..8191) overlap"]
        );
        edit_entries(&p, |e| {
            set_range(e, 2, 8191, 4096);
            set_range(e, 1, 10, 4095);
        });
        let got = problems(&p);
        assert!(
            got[0].contains("lies outside the usable LBAs 34..32734"),
            "{got:?}"
        );
        assert!(
            got[1].contains("partition 2 (root, LBA 8191..4096) is reversed"),
            "{got:?}"
        );
        assert_eq!(got.len(), 2, "{got:?}");
        // A partition past the end of the disk, and one inside all others.
        edit_entries(&p, |e| {
            set_range(e, 1, 2048, u64::MAX);
            set_range(e, 2, 4096, 8191);
        });
        let got = problems(&p).join("\n");
        assert!(got.contains("partition 1 (esp, LBA 2048..18446744073709551615) ends at byte 18446744073709551615, past the end of the file (16777216 bytes)"), "{got}");
        assert!(
            got.contains("and partition 2 (root, LBA 4096..8191) overlap"),
            "{got}"
        );
        assert!(got.contains("and partition 3 (persistence"), "{got}");
    }

    #[test]
    fn hostile_primary_headers_are_corrupt_not_panics() {
        let t = tempfile::tempdir().unwrap();
        for (field, value, says) in [
            (12, 0u64, "header size 0"),
            (80, 1 << 30, "1073741824 partition entries"),
            (84, 64, "entries of 64 bytes"),
            (72, 1, "entries start at LBA 1"),
            (32, u64::MAX, "backup header at LBA 18446744073709551615"),
            (48, u64::MAX - 1, "usable LBAs 34..18446744073709551614"),
        ] {
            let p = disk(t.path());
            let bytes = value.to_le_bytes();
            let width = if [12, 80, 84].contains(&field) { 4 } else { 8 };
            patch_header(&p, 1, field, &bytes[..width]);
            let got = problems(&p);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("the primary GPT header is corrupt"),
                "{got:?}"
            );
            assert!(got[0].contains(says), "{got:?}");
            std::fs::remove_file(&p).unwrap();
        }
        // Entries that do not match the primary's CRC.
        let p = disk(t.path());
        rw(&p).write_all_at(&[1], 2 * LBA + 200).unwrap();
        assert!(problems(&p)[0].contains("partition entries do not match their CRC"));
    }

    #[test]
    fn partition_names_stay_on_one_line() {
        let t = tempfile::tempdir().unwrap();
        let p = disk(t.path());
        edit_entries(&p, |e| {
            e[56..60].copy_from_slice(&[b'\n', 0, 0x1b, 0]);
            set_range(e, 1, 10, 4095);
        });
        let got = problems(&p);
        assert!(
            got[0].starts_with("partition 1 (??p, LBA 10..4095)"),
            "{got:?}"
        );
    }
}
