//! The on-disk format of the reports spool: segment files of checksummed frames, and the upload cursor.
//!
//! A segment (`NNNNNNNNNNNNNNNNNNNN.seg`, numbered in write order) is the 8-byte magic `HGWSPL1\n`, then
//! frames: `u32` payload length (little endian), `u32` CRC32 of the payload, the payload. A payload is
//! one acknowledged dataplane batch as NDJSON (Elasticsearch form), every line ending in `\n`.
//!
//! A crash can leave the last frame half written (the agent never acknowledged it: acknowledgements wait
//! for the fsync). [`scan`] finds where the valid frames end, so start-up keeps every frame before a
//! torn or corrupt one and cuts the rest.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// First bytes of every segment; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"HGWSPL1\n";
/// Length and checksum in front of each payload.
pub const FRAME_HEADER: usize = 8;
/// A length above this is corruption, not a batch: a dataplane batch is 500 records (well under 4 MiB)
/// and gRPC messages are capped far below this.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024 * 1024;

const SEGMENT_SUFFIX: &str = ".seg";
const CURSOR_FILE: &str = "cursor";

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payloads are bounded by MAX_FRAME_PAYLOAD");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One valid frame of a scanned segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRef {
    /// Offset of the frame header in the segment.
    pub offset: u64,
    /// Where the payload is in the scanned bytes.
    pub payload: Range<usize>,
    /// Documents in the payload (its `\n` count).
    pub lines: u32,
}

impl FrameRef {
    /// Offset just past the frame: where the next one starts.
    pub fn end(&self) -> u64 {
        self.payload.end as u64
    }
}

/// Why a segment's valid frames end before its last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not a spool segment (or written by a newer format).
    BadMagic,
    /// The file ends inside a frame header or payload: an interrupted write.
    Torn { at: u64 },
    /// A complete frame whose payload does not match its checksum.
    Checksum { at: u64 },
    /// A length no batch can have: the header itself is damaged.
    BadLength { at: u64, len: u32 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadMagic => f.write_str("not a spool segment (bad magic)"),
            Problem::Torn { at } => write!(f, "torn frame at byte {at} (interrupted write)"),
            Problem::Checksum { at } => write!(f, "CRC32 mismatch in the frame at byte {at}"),
            Problem::BadLength { at, len } => write!(f, "impossible frame length {len} at byte {at}"),
        }
    }
}

/// The valid frames of a segment, and where and why they stop (if before the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub frames: Vec<FrameRef>,
    /// Bytes up to the end of the last valid frame (the magic alone when there is none; 0 when even the
    /// magic is wrong or incomplete).
    pub valid_len: u64,
    pub problem: Option<Problem>,
}

impl Scan {
    pub fn lines(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.lines)).sum()
    }
}

/// Reads the frames of a whole segment held in memory.
pub fn scan(bytes: &[u8]) -> Scan {
    if bytes.len() < MAGIC.len() {
        let problem = (!bytes.is_empty()).then_some(Problem::Torn { at: 0 });
        return Scan { frames: Vec::new(), valid_len: 0, problem };
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Scan { frames: Vec::new(), valid_len: 0, problem: Some(Problem::BadMagic) };
    }
    let mut frames = Vec::new();
    let mut at = MAGIC.len();
    let problem = loop {
        if at == bytes.len() {
            break None;
        }
        let Some(header) = bytes.get(at..at + FRAME_HEADER) else {
            break Some(Problem::Torn { at: at as u64 });
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len as usize > MAX_FRAME_PAYLOAD {
            break Some(Problem::BadLength { at: at as u64, len });
        }
        let payload = at + FRAME_HEADER..at + FRAME_HEADER + len as usize;
        let Some(data) = bytes.get(payload.clone()) else {
            break Some(Problem::Torn { at: at as u64 });
        };
        if crc32fast::hash(data) != crc {
            break Some(Problem::Checksum { at: at as u64 });
        }
        let lines = data.iter().filter(|b| **b == b'\n').count() as u32;
        frames.push(FrameRef { offset: at as u64, payload: payload.clone(), lines });
        at = payload.end;
    };
    let valid_len = frames.last().map_or(MAGIC.len() as u64, FrameRef::end);
    Scan { frames, valid_len, problem }
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// The id of a segment file name, `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Segment ids present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// How far the uploader got: everything before `offset` in segment `segment` was delivered, and the
/// first `line` documents of the frame at `offset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
    pub line: u32,
}

impl Cursor {
    /// Reads `DIR/cursor`; `None` when missing or unreadable (start from the oldest segment).
    pub fn load(dir: &Path) -> Option<Cursor> {
        let text = std::fs::read_to_string(dir.join(CURSOR_FILE)).ok()?;
        let mut parts = text.split_ascii_whitespace().map(str::parse::<u64>);
        let (Some(Ok(segment)), Some(Ok(offset)), Some(Ok(line)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(dir = %dir.display(), "spool cursor unreadable; uploading from the oldest segment (documents keep their _id, so resends do not double count)");
            return None;
        };
        Some(Cursor { segment, offset, line: u32::try_from(line).ok()? })
    }

    /// Writes `DIR/cursor` atomically (rename). Not fsynced: losing it only resends documents.
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{} {} {}\n", self.segment, self.offset, self.line))?;
        std::fs::rename(tmp, dir.join(CURSOR_FILE))
    }
}

/// Creates segment `id` holding only the magic (flushed to the OS, not synced).
pub fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(segment_path(dir, id))?;
    file.write_all(MAGIC)?;
    Ok(file)
}

/// Makes a directory's entries (new or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for p in payloads {
            encode_frame(p, &mut bytes);
        }
        bytes
    }

    #[test]
    fn frames_round_trip() {
        let bytes = segment(&[b"{\"a\":1}\n{\"b\":2}\n", b"", b"{\"c\":3}\n"]);
        let scan = scan(&bytes);
        assert_eq!(scan.problem, None);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.frames.len(), 3);
        assert_eq!(scan.frames.iter().map(|f| f.lines).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(&bytes[scan.frames[2].payload.clone()], b"{\"c\":3}\n");
        assert_eq!(scan.frames[0].offset, MAGIC.len() as u64);
        assert_eq!(scan.frames[1].offset, scan.frames[0].end());
        assert_eq!(scan.lines(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_frames_before_it_kept() {
        let whole = segment(&[b"one\n", b"two\n"]);
        let first_end = (MAGIC.len() + FRAME_HEADER + 4) as u64;
        // Every cut inside the second frame (header or payload) keeps exactly the first.
        for cut in first_end as usize + 1..whole.len() {
            let scan = scan(&whole[..cut]);
            assert_eq!(scan.frames.len(), 1, "cut at {cut}");
            assert_eq!(scan.valid_len, first_end);
            assert_eq!(scan.problem, Some(Problem::Torn { at: first_end }), "cut at {cut}");
        }
        assert_eq!(scan(&whole[..3]).problem, Some(Problem::Torn { at: 0 }));
        assert_eq!(scan(&whole[..3]).valid_len, 0);
        assert_eq!(scan(&[]).problem, None, "an empty file is just empty");
        let only_magic = scan(MAGIC);
        assert_eq!((only_magic.frames.len(), only_magic.valid_len, only_magic.problem), (0, 8, None));
    }

    #[test]
    fn a_checksum_mismatch_stops_the_scan() {
        let mut bytes = segment(&[b"one\n", b"two\n", b"three\n"]);
        let second = MAGIC.len() + FRAME_HEADER + 4;
        bytes[second + FRAME_HEADER] ^= 0x20; // "two" -> "Two"
        let scan = scan(&bytes);
        assert_eq!(scan.frames.len(), 1, "frames after a corrupt one cannot be trusted");
        assert_eq!(scan.problem, Some(Problem::Checksum { at: second as u64 }));
        assert_eq!(scan.valid_len, second as u64);
    }

    #[test]
    fn bad_magic_and_impossible_lengths_are_corruption() {
        let mut bytes = segment(&[b"one\n"]);
        bytes[0] = b'X';
        assert_eq!(scan(&bytes).problem, Some(Problem::BadMagic));
        let mut bytes = segment(&[b"one\n"]);
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(scan(&bytes).problem, Some(Problem::BadLength { at: 8, .. })));
    }

    #[test]
    fn names_and_cursor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("cursor"), None);
        create_segment(dir.path(), 7).unwrap();
        create_segment(dir.path(), 3).unwrap();
        std::fs::write(dir.path().join("cursor"), "junk").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![3, 7]);
        assert_eq!(Cursor::load(dir.path()), None, "an unreadable cursor means: from the start");
        let cursor = Cursor { segment: 7, offset: 120, line: 3 };
        cursor.store(dir.path()).unwrap();
        assert_eq!(Cursor::load(dir.path()), Some(cursor));
        assert!(create_segment(dir.path(), 7).is_err(), "never overwrites a segment");
    }
}
