//! The checkpoint of an `--apply` run: JSON lines, one per op the run has
//! settled (replayed, or found already on the new owner), each synced before
//! the next replay. An interrupted run leaves it behind and the next
//! `--apply` does not send those ops again; a run that finishes marks it
//! complete, so the run after that probes the new owner afresh.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub op: String,
    pub verdict: String,
    pub status: Option<u16>,
    pub position: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Complete {
    complete: bool,
}

pub struct Checkpoint {
    pub path: PathBuf,
    file: File,
    done: HashMap<String, Entry>,
    /// Entries taken over from an interrupted run.
    pub resumed: usize,
}

impl Checkpoint {
    /// Opens `path`: resumes an interrupted run's entries, or starts afresh
    /// after a complete one (or when there is none).
    pub fn open(path: &Path) -> io::Result<Checkpoint> {
        let mut done = HashMap::new();
        let mut complete = false;
        let mut torn = false;
        match std::fs::read(path) {
            Ok(bytes) => {
                torn = bytes.last().is_some_and(|b| *b != b'\n');
                for line in bytes.lines() {
                    let line = line?;
                    if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                        done.insert(e.op.clone(), e);
                    } else if serde_json::from_str::<Complete>(&line).is_ok_and(|c| c.complete) {
                        complete = true;
                    }
                    // A line cut short by the interruption is simply not settled.
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if complete {
            done.clear();
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(!complete)
            .truncate(complete)
            .open(path)?;
        if torn && !complete {
            // End the cut line, so the next entry starts on its own.
            file.write_all(b"\n")?;
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            file,
            resumed: done.len(),
            done,
        })
    }

    pub fn settled(&self, op: &str) -> Option<&Entry> {
        self.done.get(op)
    }

    /// Records a settled op durably.
    pub fn record(&mut self, entry: Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.done.insert(entry.op.clone(), entry);
        Ok(())
    }

    /// Marks the run finished.
    pub fn complete(mut self) -> io::Result<()> {
        self.file.write_all(b"{\"complete\":true}\n")?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_run_resumes_and_a_complete_one_starts_afresh() {
        let path = std::env::temp_dir().join(format!("sy-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let entry = |op: &str| Entry {
            op: op.into(),
            verdict: "replayed".into(),
            status: Some(201),
            position: Some(9),
        };
        let mut c = Checkpoint::open(&path).expect("open");
        c.record(entry("a")).expect("record");
        drop(c);
        // A torn last line from a kill mid-write.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"op\":\"b\",\"verd"))
            .expect("tear");
        let c = Checkpoint::open(&path).expect("reopen");
        assert_eq!(c.resumed, 1);
        assert_eq!(c.settled("a"), Some(&entry("a")));
        assert!(c.settled("b").is_none());
        c.complete().expect("complete");
        let c = Checkpoint::open(&path).expect("after complete");
        assert_eq!(c.resumed, 0);
        assert!(c.settled("a").is_none());
        let _ = std::fs::remove_file(&path);
    }
}
