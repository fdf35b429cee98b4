//! Any bytes as the stored rows of a data directory: each row's table is picked by a
//! byte, its length by two more, and the rows are loaded into a fresh state and checked
//! as an open does. Decoded and checked, or refused with an error, never a panic (rows
//! are read back at every open, from a disk that may have damaged them).
#![no_main]

use std::sync::OnceLock;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static TABLES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let tables = TABLES.get_or_init(emporium_engine::table_names);
    let mut rows = Vec::new();
    let mut rest = data;
    while let [table, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (row, after) = tail.split_at(len);
        rows.push((tables[usize::from(*table) % tables.len()], row));
        rest = after;
    }
    let _ = emporium_engine::check_rows(rows);
});
