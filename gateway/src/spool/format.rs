//! The spool's on-disk format, version 1. Everything that turns records into bytes and back.
//!
//! A spool directory holds numbered segment files, `00000000000000000001.seg`, … written in
//! order and each appended to only while it is the newest. A segment is:
//!
//! ```text
//! header  (16 bytes)  magic "CGSPOOL\0" · format version u32 LE (1) · reserved u32 (0)
//! frame*              body length u32 LE · CRC-32C of the body u32 LE · body
//! body                spooled_at_ms u64 LE
//!                     key length u32 LE · key (UTF-8)
//!                     header count u16 LE · per header: name length u16 LE · name (UTF-8)
//!                                                       value length u32 LE · value (UTF-8)
//!                     value length u32 LE · value (the Kafka record's value)
//! ```
//!
//! A frame is written whole and synced before its webhook is answered, so after a crash only
//! the newest segment can end in a frame cut short (a torn tail); that tail was never answered
//! 2xx and is cut off at open. A frame that fails its checksum anywhere else is corruption:
//! it is reported, never published.
//!
//! `cursor` (text, `v1 <segment> <offset>`) says how far the drainer got. It is written without
//! a sync: losing it only republishes records the broker already has, which the worker skips
//! by event id.

use std::fmt;

/// Names a segment file.
pub const SEGMENT_SUFFIX: &str = ".seg";
pub const CURSOR_FILE: &str = "cursor";
pub const LOCK_FILE: &str = "lock";

const MAGIC: &[u8; 8] = b"CGSPOOL\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 16;
/// Length and checksum in front of every body.
pub const FRAME_OVERHEAD: usize = 8;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One record as the spool keeps it: what the drainer republishes, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    pub spooled_at_ms: u64,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub value: Vec<u8>,
}

/// Why bytes read back are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside a frame: a write cut short by a crash (if at the end of the newest
    /// segment).
    Truncated,
    /// The body does not match its checksum, or its length is beyond any record's.
    Checksum,
    /// The checksum holds but the body does not parse: written by a different format.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("frame cut short"),
            FrameError::Checksum => f.write_str("frame fails its checksum"),
            FrameError::Malformed(what) => write!(f, "frame body malformed: {what}"),
        }
    }
}

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id of a segment file name, if it is one.
pub fn segment_id(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

pub fn segment_header() -> [u8; HEADER_LEN as usize] {
    let mut header = [0_u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Checks a segment's header; the format version it names, if it is a spool segment.
pub fn read_header(bytes: &[u8]) -> Result<u32, FrameError> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(FrameError::Truncated);
    }
    if &bytes[..8] != MAGIC {
        return Err(FrameError::Malformed("not a spool segment"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(FrameError::Malformed("unknown spool format version"));
    }
    Ok(version)
}

/// The frame of one record: appended to `out`, returns its length.
pub fn encode(record: &SpooledRecord, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_OVERHEAD]);
    out.extend_from_slice(&record.spooled_at_ms.to_le_bytes());
    put_u32_prefixed(out, record.key.as_bytes());
    // Header counts and name lengths are bounded by what `encoded_len` admitted.
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    for (name, value) in &record.headers {
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        put_u32_prefixed(out, value.as_bytes());
    }
    put_u32_prefixed(out, &record.value);
    let body_len = out.len() - start - FRAME_OVERHEAD;
    #[allow(clippy::cast_possible_truncation)]
    let len = (body_len as u32).to_le_bytes();
    let crc = CRC.checksum(&out[start + FRAME_OVERHEAD..]).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
    out.len() - start
}

/// The frame length of a record, or None when a part is too long for the format (a header
/// name over 64 KiB, more than 65,535 headers, a part over 4 GiB).
pub fn encoded_len(record: &SpooledRecord) -> Option<usize> {
    let fits_u32 = |n: usize| u32::try_from(n).is_ok();
    if record.headers.len() > usize::from(u16::MAX)
        || record.headers.iter().any(|(n, v)| n.len() > usize::from(u16::MAX) || !fits_u32(v.len()))
        || !fits_u32(record.key.len())
        || !fits_u32(record.value.len())
    {
        return None;
    }
    let headers: usize = record.headers.iter().map(|(n, v)| 2 + n.len() + 4 + v.len()).sum();
    let len = FRAME_OVERHEAD + 8 + 4 + record.key.len() + 2 + headers + 4 + record.value.len();
    fits_u32(len - FRAME_OVERHEAD).then_some(len)
}

fn put_u32_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    #[allow(clippy::cast_possible_truncation)]
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the frame at the start of `bytes`: the record and the frame's length. `max_body` is
/// the largest body this spool writes; a longer length is corruption, not an allocation.
pub fn decode(bytes: &[u8], max_body: usize) -> Result<(SpooledRecord, usize), FrameError> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<FRAME_OVERHEAD>() else {
        return Err(FrameError::Truncated);
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if len > max_body {
        return Err(FrameError::Checksum);
    }
    let Some(body) = rest.get(..len) else {
        return Err(FrameError::Truncated);
    };
    if CRC.checksum(body) != crc {
        return Err(FrameError::Checksum);
    }
    Ok((parse_body(body)?, FRAME_OVERHEAD + len))
}

fn parse_body(body: &[u8]) -> Result<SpooledRecord, FrameError> {
    let mut reader = Reader(body);
    let spooled_at_ms = u64::from_le_bytes(reader.array::<8>()?);
    let key = reader.text_u32()?;
    let count = u16::from_le_bytes(reader.array::<2>()?);
    let mut headers = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let name_len = usize::from(u16::from_le_bytes(reader.array::<2>()?));
        let name = reader.text(name_len)?;
        let value = reader.text_u32()?;
        headers.push((name, value));
    }
    let value_len = reader.u32_len()?;
    let value = reader.take(value_len)?.to_vec();
    if !reader.0.is_empty() {
        return Err(FrameError::Malformed("bytes after the value"));
    }
    Ok(SpooledRecord { spooled_at_ms, key, headers, value })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.0.len() {
            return Err(FrameError::Malformed("a length runs past the body"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32_len(&mut self) -> Result<usize, FrameError> {
        Ok(u32::from_le_bytes(self.array::<4>()?) as usize)
    }

    fn text(&mut self, n: usize) -> Result<String, FrameError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::Malformed("text is not UTF-8"))
    }

    fn text_u32(&mut self) -> Result<String, FrameError> {
        let n = self.u32_len()?;
        self.text(n)
    }
}

/// Where the drainer has got to: the next frame to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

pub fn encode_cursor(position: Position) -> String {
    format!("v1 {} {}\n", position.segment, position.offset)
}

pub fn decode_cursor(text: &str) -> Option<Position> {
    let mut parts = text.split_ascii_whitespace();
    if parts.next()? != "v1" {
        return None;
    }
    let position = Position { segment: parts.next()?.parse().ok()?, offset: parts.next()?.parse().ok()? };
    parts.next().is_none().then_some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> SpooledRecord {
        SpooledRecord {
            spooled_at_ms: 1_790_000_000_123,
            key: "twilio:CA1".into(),
            headers: vec![("callgate-event-id".into(), "0b7c".into()), ("callgate-trace-id".into(), "ab".into())],
            value: value.to_vec(),
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_its_length_is_known_beforehand() {
        let mut out = Vec::new();
        let rec = record(b"{\"v\":1}");
        let len = encode(&rec, &mut out);
        assert_eq!(Some(len), encoded_len(&rec));
        assert_eq!(out.len(), len);
        assert_eq!(decode(&out, 1 << 20), Ok((rec, len)));
    }

    #[test]
    fn a_frame_cut_short_is_truncated_and_a_flipped_byte_fails_its_checksum() {
        let mut out = Vec::new();
        let len = encode(&record(b"payload"), &mut out);
        for cut in 0..len {
            assert_eq!(decode(&out[..cut], 1 << 20), Err(FrameError::Truncated), "cut at {cut}");
        }
        for i in FRAME_OVERHEAD..len {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad, 1 << 20), Err(FrameError::Checksum), "byte {i}");
        }
    }

    #[test]
    fn a_length_beyond_any_record_is_corruption_not_an_allocation() {
        let mut frame = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        frame.extend_from_slice(&[0; 32]);
        assert_eq!(decode(&frame, 1 << 20), Err(FrameError::Checksum));
    }

    #[test]
    fn names_headers_and_cursors_round_trip() {
        assert_eq!(segment_id(&segment_name(42)), Some(42));
        assert_eq!(segment_id("42.seg"), None);
        assert_eq!(segment_id("0000000000000000004x.seg"), None);
        assert_eq!(read_header(&segment_header()), Ok(VERSION));
        assert!(read_header(b"CGSPOOL\0\x02\0\0\0\0\0\0\0").is_err());
        let at = Position { segment: 7, offset: 1234 };
        assert_eq!(decode_cursor(&encode_cursor(at)), Some(at));
        assert_eq!(decode_cursor("v2 1 2"), None);
        assert_eq!(decode_cursor("v1 1"), None);
    }
}
