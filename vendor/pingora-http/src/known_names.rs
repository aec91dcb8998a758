// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Header names an application expects in most messages, parsed once.
//!
//! [HeaderName::from_bytes] lowercases and matches every name it is given, and
//! a name the `http` crate does not know (`x-request-id`, `traceparent`, an
//! application's own) is copied into a new allocation, which the first clone
//! of the header map (a proxy's upstream request) copies again into a shared
//! one. An application that knows which names its clients and upstreams send
//! registers them once with [set_known_header_names]; the HTTP/1 parsers then
//! take a registered name from here, a clone that allocates nothing, and parse
//! only the others.

use http::header::HeaderName;
use std::sync::OnceLock;

/// Names longer than this are always parsed.
const MAX_LEN: usize = 64;

struct Known {
    lowercase: Box<[u8]>,
    name: HeaderName,
}

/// An open-addressed table, at most a quarter full, so a search ends at an
/// empty slot after a probe or two.
struct KnownNames {
    slots: Box<[Option<Known>]>,
    mask: usize,
}

static KNOWN: OnceLock<KnownNames> = OnceLock::new();

/// Where a name of `len` bytes with these first, middle and last bytes
/// starts its search: three bytes and the length tell most names apart, and
/// reading them costs less than hashing the whole name. Each byte is taken
/// `| 0x20`, which folds ASCII letters to lowercase and changes no other byte
/// differently in a name than in its lowercase form, so a name in any case
/// starts where its registered form does.
#[inline]
fn home(len: usize, first: u8, middle: u8, last: u8) -> usize {
    let h = (len as u32) ^ ((first as u32) << 8) ^ ((middle as u32) << 16) ^ ((last as u32) << 24);
    (((h | 0x2020_2000).wrapping_mul(0x9E37_79B1)) >> 16) as usize
}

/// Registers the header names the HTTP/1 parsers take ready-made rather
/// than parse: those most messages carry. Only the first call registers;
/// a later one returns `false` and changes nothing (the table is read by
/// every parse without a lock). Names longer than 64 bytes, duplicates and
/// names past the first 4,096 are left out: they are parsed as before.
///
/// A name `http` does not know is kept as a `'static` copy (leaked once,
/// a few bytes each), so taking it is a copy of two words, with no
/// reference count to touch.
pub fn set_known_header_names(names: impl IntoIterator<Item = HeaderName>) -> bool {
    KNOWN.set(KnownNames::new(names)).is_ok()
}

/// The registered name `bytes` spells, in any case; `None` when it is not
/// registered (or nothing is).
#[inline]
pub fn known_header_name(bytes: &[u8]) -> Option<HeaderName> {
    KNOWN.get()?.get(bytes)
}

impl KnownNames {
    fn new(names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut kept: Vec<HeaderName> = Vec::new();
        for name in names {
            if kept.len() < 4096 && name.as_str().len() <= MAX_LEN && !kept.contains(&name) {
                kept.push(name);
            }
        }
        let size = (kept.len() * 4).next_power_of_two().max(16);
        let mut slots: Vec<Option<Known>> = (0..size).map(|_| None).collect();
        for name in kept {
            let text: &'static str = Box::leak(name.as_str().to_owned().into_boxed_str());
            let lowercase: Box<[u8]> = text.as_bytes().into();
            let len = lowercase.len();
            let mut i =
                home(len, lowercase[0], lowercase[len / 2], lowercase[len - 1]) & (size - 1);
            while slots[i].is_some() {
                i = (i + 1) & (size - 1);
            }
            slots[i] = Some(Known {
                lowercase,
                name: HeaderName::from_static(text),
            });
        }
        KnownNames {
            slots: slots.into_boxed_slice(),
            mask: size - 1,
        }
    }

    #[inline]
    fn get(&self, bytes: &[u8]) -> Option<HeaderName> {
        let len = bytes.len();
        if len == 0 || len > MAX_LEN {
            return None;
        }
        let mut i = home(len, bytes[0], bytes[len / 2], bytes[len - 1]) & self.mask;
        while let Some(k) = &self.slots[i] {
            if k.lowercase.len() == len && eq_lowercase(bytes, &k.lowercase) {
                return Some(k.name.clone());
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// Whether `input`, ASCII-lowercased, is `lowercase` (of the same length):
/// eight bytes at a time. Exact for any input: only `A..=Z` change.
#[inline]
fn eq_lowercase(input: &[u8], lowercase: &[u8]) -> bool {
    let len = input.len();
    if len < 8 {
        return input
            .iter()
            .zip(lowercase)
            .all(|(b, l)| b.to_ascii_lowercase() == *l);
    }
    let load = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    };
    let mut at = 0;
    while at + 8 <= len {
        if lowercase8(load(input, at)) != load(lowercase, at) {
            return false;
        }
        at += 8;
    }
    // The last bytes, in a word that overlaps the one before.
    at == len || lowercase8(load(input, len - 8)) == load(lowercase, len - 8)
}

/// Eight bytes ASCII-lowercased at once: 0x20 is added to each byte in
/// `A..=Z`, and no other byte changes.
#[inline]
fn lowercase8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Each byte's low seven bits; the sums below cannot carry into the next byte.
    let low7 = x & !HIGH;
    let from_a = low7 + (0x80 - b'A' as u64) * ONES; // high bit set where low7 >= 'A'
    let past_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES; // high bit set where low7 > 'Z'
    let upper = from_a & !past_z & !x & HIGH; // and the byte is ASCII
    x | (upper >> 2)
}

/// `bytes` as a header name: the registered one when there is one, else
/// parsed by [HeaderName::from_bytes].
#[inline]
pub fn header_name_from_bytes(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match known_header_name(bytes) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_bytes_lowercase_as_each_byte_does() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = *b"AbC-x9Z~";
                word[pos] = b;
                let want = word.map(|c| c.to_ascii_lowercase());
                assert_eq!(
                    lowercase8(u64::from_le_bytes(word)),
                    u64::from_le_bytes(want)
                );
            }
        }
        assert!(eq_lowercase(b"Content-Length", b"content-length"));
        assert!(!eq_lowercase(b"Content-Lengtx", b"content-length"));
        assert!(!eq_lowercase(b"Xontent-Length", b"content-length"));
        assert!(eq_lowercase(b"X-REQUEST-ID", b"x-request-id"));
        assert!(!eq_lowercase(b"X-REQUEST\rID", b"x-request-id"));
        assert!(eq_lowercase(b"HoSt", b"host"));
        assert!(!eq_lowercase(b"hosT\xd4"[..4].as_ref(), b"hose"));
        assert!(eq_lowercase(b"ABCDEFGH", b"abcdefgh"));
        assert!(!eq_lowercase(b"ABCDEFG\xc8", b"abcdefg\xe8"));
    }

    #[test]
    fn every_name_of_a_large_table_is_found_and_no_other() {
        let names: Vec<HeaderName> = (0..3000)
            .map(|i| HeaderName::from_bytes(format!("x-name-{i}").as_bytes()).unwrap())
            .chain([
                http::header::HOST,
                http::header::CONTENT_LENGTH,
                http::header::DATE,
            ])
            .collect();
        let table = KnownNames::new(names.clone());
        for name in &names {
            assert_eq!(table.get(name.as_str().as_bytes()).as_ref(), Some(name));
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(table.get(upper.as_bytes()).as_ref(), Some(name));
        }
        for other in [
            "x-name-3000",
            "x-name-",
            "x-nam-1",
            "hosts",
            "content-lengt",
            "x",
        ] {
            assert!(table.get(other.as_bytes()).is_none(), "{other}");
        }
        // Past 4,096 names the rest are parsed, not registered.
        let many = KnownNames::new(
            (0..5000).map(|i| HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap()),
        );
        assert!(many.get(b"x-4095").is_some());
        assert!(many.get(b"x-4096").is_none());
    }

    // One process-wide table: one test registers it and checks every case.
    #[test]
    fn registered_names_are_found_in_any_case_and_others_are_parsed() {
        assert!(known_header_name(b"x-request-id").is_none());
        let long = HeaderName::from_bytes(&[b'a'; 65]).unwrap();
        assert!(set_known_header_names([
            HeaderName::from_static("x-request-id"),
            http::header::HOST,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("x-request-id"),
            long.clone(),
        ]));
        assert!(!set_known_header_names([HeaderName::from_static(
            "x-other"
        )]));

        for spelled in [&b"x-request-id"[..], b"X-Request-Id", b"X-REQUEST-ID"] {
            let name = known_header_name(spelled).expect("registered");
            assert_eq!(name, HeaderName::from_static("x-request-id"));
        }
        assert_eq!(known_header_name(b"Host"), Some(http::header::HOST));
        assert_eq!(
            known_header_name(b"TraceParent").map(|n| n.as_str().to_owned()),
            Some("traceparent".to_owned())
        );
        // Same length as a registered name, different bytes.
        assert!(known_header_name(b"x-request-ix").is_none());
        assert!(known_header_name(b"x-other").is_none());
        assert!(known_header_name(b"").is_none());
        assert!(known_header_name(&[b'a'; 65]).is_none());
        assert!(known_header_name(&[b'a'; 1000]).is_none());
        // A byte no name may hold never matches, even one that lowercases
        // (by `| 0x20`) to a byte of a registered name.
        assert!(known_header_name(b"x-request\x0did").is_none());
        assert!(known_header_name(b"x\rrequest-id").is_none());
        assert!(known_header_name(b"x-request-id\0").is_none());

        // Unregistered names are parsed, and bad ones are still refused.
        assert_eq!(
            header_name_from_bytes(b"X-Other").unwrap(),
            HeaderName::from_static("x-other")
        );
        assert!(header_name_from_bytes(b"bad name").is_err());
        assert!(header_name_from_bytes(b"").is_err());
        assert_eq!(
            header_name_from_bytes(b"X-Request-ID").unwrap(),
            HeaderName::from_static("x-request-id")
        );
    }
}
