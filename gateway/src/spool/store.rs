//! The spool directory on disk: opening it (lock, scan, recover), appending with a sync,
//! reading frames back, and removing what was drained. Blocking file I/O only: the writer runs
//! on a thread of its own and the drainer calls in through `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::format::{
    self, CURSOR_FILE, FrameError, HEADER_LEN, LOCK_FILE, Position, SpooledRecord, segment_header, segment_name,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("spool directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("spool directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("spool segment {segment} has format version {found}; this build reads version {}", format::VERSION)]
    Version { segment: u64, found: String },
}

/// What the directory held at open, after recovery.
#[derive(Debug)]
pub struct Recovered {
    /// Every segment still on disk, with the end of its last whole frame.
    pub segments: BTreeMap<u64, u64>,
    /// The next frame to publish.
    pub cursor: Position,
    /// Records and frame bytes from the cursor on.
    pub records: u64,
    pub bytes: u64,
    pub oldest_ms: Option<u64>,
    /// Segments that held a bad frame before their end (reported; their good frames are kept).
    pub corrupt_segments: Vec<u64>,
    /// Bytes cut off the newest segment: a frame a crash cut short, never answered 2xx.
    pub torn_tail_bytes: u64,
}

/// An open spool directory. Holding it holds the directory's lock.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
    max_body: usize,
}

fn io_error(dir: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { dir: dir.to_owned(), source }
}

impl Store {
    /// Opens (creating) `dir`, takes its lock, and recovers its state. `max_body` is the largest
    /// frame body the spool writes: a longer length read back is corruption.
    pub fn open(dir: &Path, max_body: usize) -> Result<(Self, Recovered), StoreError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error(dir))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(source)) => return Err(StoreError::Io { dir: dir.to_owned(), source }),
        }
        let store = Self { dir: dir.to_owned(), _lock: lock, max_body };
        let recovered = store.recover()?;
        Ok((store, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    fn segment_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(format::segment_id) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        let ids = self.segment_ids()?;
        let saved = fs::read_to_string(self.dir.join(CURSOR_FILE)).ok().as_deref().and_then(format::decode_cursor);
        let first = Position { segment: ids.first().copied().unwrap_or(1), offset: HEADER_LEN };
        // A cursor naming a segment that is gone means that segment was drained.
        let mut cursor = match saved {
            Some(at) if ids.contains(&at.segment) => at,
            _ => first,
        };
        let mut recovered = Recovered {
            segments: BTreeMap::new(),
            cursor,
            records: 0,
            bytes: 0,
            oldest_ms: None,
            corrupt_segments: Vec::new(),
            torn_tail_bytes: 0,
        };
        for (i, &id) in ids.iter().enumerate() {
            let newest = i + 1 == ids.len();
            let path = self.segment_path(id);
            let bytes = fs::read(&path).map_err(io_error(&self.dir))?;
            if bytes.len() < HEADER_LEN as usize && newest {
                // Created but its header never synced: nothing in it was answered.
                fs::remove_file(&path).map_err(io_error(&self.dir))?;
                continue;
            }
            if let Err(error) = format::read_header(&bytes) {
                let found = match error {
                    FrameError::Malformed(what) => what.to_owned(),
                    other => other.to_string(),
                };
                return Err(StoreError::Version { segment: id, found });
            }
            let mut offset = HEADER_LEN as usize;
            let end = loop {
                match format::decode(&bytes[offset..], self.max_body) {
                    Ok((record, len)) => {
                        if id > cursor.segment || (id == cursor.segment && offset as u64 >= cursor.offset) {
                            recovered.records += 1;
                            recovered.bytes += len as u64;
                            recovered.oldest_ms.get_or_insert(record.spooled_at_ms);
                        }
                        offset += len;
                    }
                    Err(_) if offset == bytes.len() => break offset,
                    Err(error) => {
                        if newest && !matches!(error, FrameError::Malformed(_)) {
                            recovered.torn_tail_bytes = (bytes.len() - offset) as u64;
                            let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&self.dir))?;
                            file.set_len(offset as u64).map_err(io_error(&self.dir))?;
                            file.sync_all().map_err(io_error(&self.dir))?;
                        } else {
                            recovered.corrupt_segments.push(id);
                        }
                        break offset;
                    }
                }
            };
            recovered.segments.insert(id, end as u64);
        }
        // A cursor past a segment's recovered end (it was cut) starts the next one.
        if let Some(&end) = recovered.segments.get(&cursor.segment)
            && cursor.offset > end
        {
            cursor.offset = end;
        }
        recovered.cursor = cursor;
        Ok(recovered)
    }

    /// Creates segment `id` with its header, synced, and syncs the directory so the file
    /// survives a crash.
    pub fn create_segment(&self, id: u64) -> io::Result<File> {
        let path = self.segment_path(id);
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        file.write_all(&segment_header())?;
        file.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok(file)
    }

    /// Opens the newest segment to append to it after a restart.
    pub fn reopen_segment(&self, id: u64) -> io::Result<File> {
        OpenOptions::new().append(true).open(self.segment_path(id))
    }

    /// Frames from `from` up to `until` (the segment's synced end), at most `max_records` and
    /// about `max_bytes`; each with the position after it.
    pub fn read(
        &self,
        from: Position,
        until: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(SpooledRecord, Position)>, ReadError> {
        let mut out = Vec::new();
        if from.offset >= until {
            return Ok(out);
        }
        let mut file = File::open(self.segment_path(from.segment)).map_err(ReadError::Io)?;
        file.seek(SeekFrom::Start(from.offset)).map_err(ReadError::Io)?;
        // The synced part of a segment is immutable; only it is read.
        let want = usize::try_from(until - from.offset).unwrap_or(usize::MAX);
        let mut buffer = Vec::with_capacity(want.min(max_bytes.saturating_add(self.max_body)));
        file.take(want as u64).read_to_end(&mut buffer).map_err(ReadError::Io)?;
        let mut offset = 0;
        let mut bytes = 0;
        while offset < buffer.len() && out.len() < max_records && bytes < max_bytes {
            let (record, len) = format::decode(&buffer[offset..], self.max_body).map_err(ReadError::Frame)?;
            offset += len;
            bytes += len;
            out.push((record, Position { segment: from.segment, offset: from.offset + offset as u64 }));
        }
        Ok(out)
    }

    pub fn remove_segment(&self, id: u64) -> io::Result<()> {
        fs::remove_file(self.segment_path(id))
    }

    /// Keeps a segment that held a bad frame for an operator to look at, out of the spool.
    pub fn set_aside(&self, id: u64) -> io::Result<()> {
        let path = self.segment_path(id);
        fs::rename(&path, path.with_extension("corrupt"))
    }

    /// Records how far the drainer got (write and rename, no sync: see the format notes).
    pub fn save_cursor(&self, at: Position) -> io::Result<()> {
        let tmp = self.dir.join(format!("{CURSOR_FILE}.tmp"));
        fs::write(&tmp, format::encode_cursor(at))?;
        fs::rename(tmp, self.dir.join(CURSOR_FILE))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the spool: {0}")]
    Io(io::Error),
    #[error("a synced spool frame does not read back: {0}")]
    Frame(FrameError),
}
