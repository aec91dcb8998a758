//! The reading side: every record of a log folder in order, with every
//! problem met on the way (damage, newer formats, a torn tail) reported.

use std::io;
use std::path::Path;

use crate::record::Record;
use crate::segment::{self, Problem};

/// Reads every record in `dir` with a sequence number at or after `from`,
/// oldest first. A missing folder is an error; damage is a [`Problem`].
pub fn read_dir(
    dir: &Path,
    from: u64,
    mut each: impl FnMut(u64, Record),
) -> io::Result<Vec<Problem>> {
    let segments = segment::list(dir)?;
    let mut problems = Vec::new();
    for (i, (_, path)) in segments.iter().enumerate() {
        // Wholly before `from`: the next segment starts at or before it.
        if segments.get(i + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let bytes = std::fs::read(path)?;
        let scan = segment::scan(path, &bytes, |seq, r| {
            if seq >= from {
                each(seq, r)
            }
        });
        problems.extend(scan.problems);
    }
    Ok(problems)
}
