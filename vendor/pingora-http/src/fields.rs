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

//! Which of the fields a proxy reads on every message a header may carry.
//!
//! Framing, keep-alive, upgrade and authority checks look up the same few
//! fields on each request and response, most of which a message does not
//! carry; each lookup hashes the name. A header records, as fields are
//! added, which of these it may carry, so a check can skip the lookup of a
//! field that is not there.
//!
//! The set errs one way only: a field it says is absent is absent. Adding a
//! field sets its bit; removing one leaves the bit set (the name a removal
//! is given cannot be classified cheaply), so a lookup after a removal is
//! only made as before.

use http::header::{HeaderMap, HeaderName};

/// A field a proxy reads on every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field(u8);

impl Field {
    const fn bit(self) -> u16 {
        1 << self.0
    }
}

pub const CONTENT_LENGTH: Field = Field(0);
pub const TRANSFER_ENCODING: Field = Field(1);
pub const HOST: Field = Field(2);
pub const CONNECTION: Field = Field(3);
pub const UPGRADE: Field = Field(4);
pub const KEEP_ALIVE: Field = Field(5);
pub const PROXY_CONNECTION: Field = Field(6);
pub const TE: Field = Field(7);
pub const EXPECT: Field = Field(8);
pub const DATE: Field = Field(9);
pub const HTTP2_SETTINGS: Field = Field(10);

/// The fields a header may carry. A clear bit means it does not carry that
/// field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(u16);

impl FieldSet {
    /// A set that says "may carry" of every field.
    pub const ANY: FieldSet = FieldSet(u16::MAX);

    /// The fields `headers` carries, in one pass over its names.
    pub fn of<T>(headers: &HeaderMap<T>) -> FieldSet {
        FieldSet(headers.keys().fold(0, |bits, name| bits | bit(name)))
    }

    /// Whether a header with this set may carry `field`.
    #[inline]
    pub fn may_carry(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    /// Records that a `name` field was added.
    #[inline]
    pub(crate) fn add(&mut self, name: &HeaderName) {
        self.0 |= bit(name);
    }
}

/// `name`'s bit when it is one of the fields, else 0. Names are lowercase,
/// as `HeaderName` keeps them.
fn bit(name: &HeaderName) -> u16 {
    // A `match` on the strings compiles to a switch on the length and a
    // comparison or two, cheaper than hashing the name.
    match name.as_str() {
        "content-length" => CONTENT_LENGTH.bit(),
        "transfer-encoding" => TRANSFER_ENCODING.bit(),
        "host" => HOST.bit(),
        "connection" => CONNECTION.bit(),
        "upgrade" => UPGRADE.bit(),
        "keep-alive" => KEEP_ALIVE.bit(),
        "proxy-connection" => PROXY_CONNECTION.bit(),
        "te" => TE.bit(),
        "expect" => EXPECT.bit(),
        "date" => DATE.bit(),
        "http2-settings" => HTTP2_SETTINGS.bit(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(Field, &str); 11] = [
        (CONTENT_LENGTH, "content-length"),
        (TRANSFER_ENCODING, "transfer-encoding"),
        (HOST, "host"),
        (CONNECTION, "connection"),
        (UPGRADE, "upgrade"),
        (KEEP_ALIVE, "keep-alive"),
        (PROXY_CONNECTION, "proxy-connection"),
        (TE, "te"),
        (EXPECT, "expect"),
        (DATE, "date"),
        (HTTP2_SETTINGS, "http2-settings"),
    ];

    #[test]
    fn each_field_has_its_own_bit_and_its_name_finds_it() {
        let mut seen = 0;
        for (field, name) in ALL {
            assert_eq!(seen & field.bit(), 0, "{name} shares a bit");
            seen |= field.bit();
            assert_eq!(bit(&HeaderName::from_static(name)), field.bit(), "{name}");
        }
        assert_eq!(bit(&HeaderName::from_static("x-other")), 0);
    }

    fn agrees(fields: FieldSet, map: &HeaderMap) {
        for (field, name) in ALL {
            assert_eq!(fields.may_carry(field), map.contains_key(name), "{name}");
        }
    }

    #[test]
    fn a_header_knows_the_fields_it_was_given() {
        let mut req = crate::RequestHeader::build("GET", b"/", None).unwrap();
        agrees(req.fields(), &req.headers);
        req.append_header("Host", "a").unwrap();
        req.append_header("X-Other", "b").unwrap();
        req.insert_header(http::header::CONTENT_LENGTH, "1")
            .unwrap();
        agrees(req.fields(), &req.headers);
        let clone = req.clone();
        agrees(clone.fields(), &clone.headers);
        let parts: http::request::Parts = clone.into();
        let mut back = crate::RequestHeader::from(parts);
        agrees(back.fields(), &back.headers);
        // A removal leaves the field possible: looked up, and not found.
        back.remove_header("host");
        assert!(back.fields().may_carry(HOST));

        let mut resp = crate::ResponseHeader::build_no_case(200, None).unwrap();
        resp.append_header("Transfer-Encoding", "chunked").unwrap();
        resp.insert_header("Connection", "close").unwrap();
        agrees(resp.fields(), &resp.headers);
        let parts: http::response::Parts = resp.clone().into();
        agrees(crate::ResponseHeader::from(parts).fields(), &resp.headers);
    }

    #[test]
    fn a_set_says_absent_only_of_fields_that_are_absent() {
        let mut map = HeaderMap::new();
        map.insert(http::header::HOST, "a".parse().unwrap());
        map.insert("x-other", "b".parse().unwrap());
        let set = FieldSet::of(&map);
        for (field, name) in ALL {
            assert_eq!(set.may_carry(field), map.contains_key(name), "{name}");
        }
    }
}
