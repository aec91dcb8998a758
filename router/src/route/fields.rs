//! Which of the fields the router reads a request carries, found in one pass
//! over its names. A hashed lookup costs ~100 instructions whether or not
//! the field is there, and the hygiene checks and classification ask for
//! ~20 fields a typical request does not carry; asked through [`Fields`],
//! a field the request does not carry costs a bit test.
//!
//! The set is exact for each [`Field`] and says only "maybe" for any other
//! name: [`Present::OTHER`] is set when the request carries at least one
//! field that is not a `Field`, so a configured name (a partition or geo
//! header) is looked up whenever some such field is there.

use http::header::ValueIter;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A field the router reads on every request's path: a lookup by a
/// `Field` tests its bit without looking at the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field(u8);

impl Field {
    pub(crate) fn name(self) -> &'static HeaderName {
        &NAMES[usize::from(self.0)]
    }

    const fn bit(self) -> u32 {
        1 << self.0
    }
}

pub(crate) const CONTENT_LENGTH: Field = Field(0);
pub(crate) const TRANSFER_ENCODING: Field = Field(1);
pub(crate) const HOST: Field = Field(2);
pub(crate) const CONNECTION: Field = Field(3);
pub(crate) const KEEP_ALIVE: Field = Field(4);
pub(crate) const PROXY_CONNECTION: Field = Field(5);
pub(crate) const UPGRADE: Field = Field(6);
pub(crate) const TE: Field = Field(7);
pub(crate) const FORWARDED_FOR: Field = Field(8);
pub(crate) const FORWARDED: Field = Field(9);
pub(crate) const FORWARDED_PROTO: Field = Field(10);
pub(crate) const REAL_IP: Field = Field(11);
pub(crate) const REQUEST_ID: Field = Field(12);
pub(crate) const FRESHNESS: Field = Field(13);
pub(crate) const RYW: Field = Field(14);
pub(crate) const COOKIE: Field = Field(15);
pub(crate) const TRACEPARENT: Field = Field(16);
pub(crate) const REQUEST_TIMEOUT: Field = Field(17);
pub(crate) const CONTENT_TYPE: Field = Field(18);
pub(crate) const GRPC_TIMEOUT: Field = Field(19);
// What a write's path reads: the op log keeps the first three (and
// CONTENT_TYPE) with the write; the last two scope and name its
// idempotency key.
pub(crate) const CONTENT_ENCODING: Field = Field(20);
pub(crate) const CONTENT_LANGUAGE: Field = Field(21);
pub(crate) const ACCEPT: Field = Field(22);
pub(crate) const AUTHORIZATION: Field = Field(23);
pub(crate) const IDEMPOTENCY_KEY: Field = Field(24);

/// Each [`Field`]'s name, `NAMES[i]` for `Field(i)`.
pub(crate) static NAMES: [HeaderName; 25] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::HOST,
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::UPGRADE,
    http::header::TE,
    crate::route::headers::FORWARDED_FOR,
    http::header::FORWARDED,
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-real-ip"),
    crate::route::headers::REQUEST_ID,
    crate::route::headers::FRESHNESS,
    crate::route::headers::RYW,
    http::header::COOKIE,
    crate::route::trace::TRACEPARENT,
    HeaderName::from_static("x-request-timeout"),
    http::header::CONTENT_TYPE,
    crate::route::headers::GRPC_TIMEOUT,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_LANGUAGE,
    http::header::ACCEPT,
    http::header::AUTHORIZATION,
    HeaderName::from_static("idempotency-key"),
];

/// The set of fields a request may carry: a clear bit means the request
/// does not carry that field; a set bit means it may.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Present(u32);

impl Present {
    /// Set when the request carries a field that is not a [`Field`].
    const OTHER: u32 = 1 << 31;

    /// A set that says "may carry" of every field: what to assume of a
    /// map no pass has looked at.
    pub(crate) const ANY: Present = Present(u32::MAX);

    /// The fields `headers` carries, in one pass over its names.
    pub(crate) fn of(headers: &HeaderMap) -> Present {
        Present(headers.keys().fold(0, |bits, name| bits | bit(name)))
    }

    #[inline]
    pub(crate) fn has(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    /// Whether a request with these fields may carry `name`, a name known
    /// only at run time (one a `Connection` header lists, or configured).
    pub(crate) fn may_carry(self, name: &HeaderName) -> bool {
        self.0 & bit(name) != 0
    }

    /// Whether the request may carry a field that is not a [`Field`].
    pub(crate) fn carries_unlisted(self) -> bool {
        self.0 & Self::OTHER != 0
    }

    /// Records that every `name` field was removed. A name that is not a
    /// [`Field`] leaves the set as it was: another such field may remain.
    pub(crate) fn removed(&mut self, name: &HeaderName) {
        let b = bit(name);
        if b != Self::OTHER {
            self.0 &= !b;
        }
    }

    /// Records that a `field` was added.
    pub(crate) fn added(&mut self, field: Field) {
        self.0 |= field.bit();
    }
}

/// `name`'s bit: the [`Field`] of that name's, else [`Present::OTHER`].
/// Names are lowercase, as `HeaderName` keeps them.
fn bit(name: &HeaderName) -> u32 {
    // A `match` on the strings compiles to a switch on the length and a
    // comparison or two, cheaper than hashing the name.
    match name.as_str() {
        "content-length" => CONTENT_LENGTH.bit(),
        "transfer-encoding" => TRANSFER_ENCODING.bit(),
        "host" => HOST.bit(),
        "connection" => CONNECTION.bit(),
        "keep-alive" => KEEP_ALIVE.bit(),
        "proxy-connection" => PROXY_CONNECTION.bit(),
        "upgrade" => UPGRADE.bit(),
        "te" => TE.bit(),
        "x-forwarded-for" => FORWARDED_FOR.bit(),
        "forwarded" => FORWARDED.bit(),
        "x-forwarded-proto" => FORWARDED_PROTO.bit(),
        "x-real-ip" => REAL_IP.bit(),
        "x-request-id" => REQUEST_ID.bit(),
        "x-freshness" => FRESHNESS.bit(),
        "x-switchyard-ryw" => RYW.bit(),
        "cookie" => COOKIE.bit(),
        "traceparent" => TRACEPARENT.bit(),
        "x-request-timeout" => REQUEST_TIMEOUT.bit(),
        "content-type" => CONTENT_TYPE.bit(),
        "grpc-timeout" => GRPC_TIMEOUT.bit(),
        "content-encoding" => CONTENT_ENCODING.bit(),
        "content-language" => CONTENT_LANGUAGE.bit(),
        "accept" => ACCEPT.bit(),
        "authorization" => AUTHORIZATION.bit(),
        "idempotency-key" => IDEMPOTENCY_KEY.bit(),
        _ => Present::OTHER,
    }
}

/// A request's header map with the set of fields it carries: lookups of a
/// field the request does not carry return at once.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: &'a HeaderMap,
    present: Present,
}

impl<'a> Fields<'a> {
    /// `map`, its fields found by one pass over its names.
    pub(crate) fn new(map: &'a HeaderMap) -> Fields<'a> {
        Fields {
            map,
            present: Present::of(map),
        }
    }

    /// `map` with a set found earlier. `present` must cover every field
    /// `map` now carries: kept up to date through each removal
    /// ([`Present::removed`]) and addition ([`Present::added`]) since.
    pub(crate) fn with(map: &'a HeaderMap, present: Present) -> Fields<'a> {
        debug_assert_eq!(present.0 | Present::of(map).0, present.0);
        Fields { map, present }
    }

    pub(crate) fn present(&self) -> Present {
        self.present
    }

    /// The whole map, for what is not a lookup by name.
    pub(crate) fn map(&self) -> &'a HeaderMap {
        self.map
    }

    #[inline]
    pub(crate) fn get(&self, field: Field) -> Option<&'a HeaderValue> {
        if !self.present.has(field) {
            return None;
        }
        self.map.get(field.name())
    }

    #[inline]
    pub(crate) fn contains(&self, field: Field) -> bool {
        self.present.has(field) && self.map.contains_key(field.name())
    }

    /// Every `field`'s value, in order.
    #[inline]
    pub(crate) fn get_all(&self, field: Field) -> Values<'a> {
        Values(
            self.present
                .has(field)
                .then(|| self.map.get_all(field.name()).into_iter()),
        )
    }

    /// A field by a name known only at run time.
    pub(crate) fn get_named(&self, name: &HeaderName) -> Option<&'a HeaderValue> {
        if !self.present.may_carry(name) {
            return None;
        }
        self.map.get(name)
    }

    pub(crate) fn contains_named(&self, name: &HeaderName) -> bool {
        self.present.may_carry(name) && self.map.contains_key(name)
    }
}

/// A field's values, none when the request does not carry it.
pub(crate) struct Values<'a>(Option<ValueIter<'a, HeaderValue>>);

impl<'a> Iterator for Values<'a> {
    type Item = &'a HeaderValue;

    #[inline]
    fn next(&mut self) -> Option<&'a HeaderValue> {
        self.0.as_mut()?.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Field; 25] = [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        UPGRADE,
        TE,
        FORWARDED_FOR,
        FORWARDED,
        FORWARDED_PROTO,
        REAL_IP,
        REQUEST_ID,
        FRESHNESS,
        RYW,
        COOKIE,
        TRACEPARENT,
        REQUEST_TIMEOUT,
        CONTENT_TYPE,
        GRPC_TIMEOUT,
        CONTENT_ENCODING,
        CONTENT_LANGUAGE,
        ACCEPT,
        AUTHORIZATION,
        IDEMPOTENCY_KEY,
    ];

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in fields {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("name");
            m.append(name, HeaderValue::from_str(v).expect("value"));
        }
        m
    }

    #[test]
    fn each_field_has_its_own_bit_and_its_name_finds_it() {
        let mut seen = 0;
        for f in ALL {
            let name = f.name();
            assert_eq!(seen & f.bit(), 0, "{name} shares a bit");
            assert_ne!(f.bit(), Present::OTHER, "{name}");
            seen |= f.bit();
            assert_eq!(bit(name), f.bit(), "{name}");
        }
        for other in [
            "x-partition",
            "x-switchyard-region",
            "x-fencing-token",
            "user-agent",
        ] {
            assert_eq!(
                bit(&HeaderName::from_static(other)),
                Present::OTHER,
                "{other}"
            );
        }
    }

    #[test]
    fn a_lookup_finds_what_the_map_holds_and_nothing_else() {
        let m = map(&[
            ("Host", "a"),
            ("Content-Length", "5"),
            ("X-Partition", "k"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ]);
        let f = Fields::new(&m);
        for field in ALL {
            let name = field.name();
            assert_eq!(f.get(field), m.get(name), "{name}");
            assert_eq!(f.get_named(name), m.get(name), "{name}");
            assert_eq!(f.contains(field), m.contains_key(name), "{name}");
            let all: Vec<_> = f.get_all(field).collect();
            let expected: Vec<_> = m.get_all(name).iter().collect();
            assert_eq!(all, expected, "{name}");
        }
        for name in ["x-partition", "x-other", "accept", "x-switchyard-region"] {
            let name = HeaderName::from_static(name);
            assert_eq!(f.get_named(&name), m.get(&name), "{name}");
            assert_eq!(f.contains_named(&name), m.contains_key(&name), "{name}");
        }
        // Without an unlisted field, an unlisted name is not looked up.
        let listed_only = map(&[("Host", "a")]);
        assert!(!Present::of(&listed_only).carries_unlisted());
        assert!(Present::of(&m).carries_unlisted());
    }

    #[test]
    fn a_removal_clears_a_field_and_keeps_unlisted_ones_possible() {
        let mut m = map(&[("TE", "gzip"), ("X-A", "1"), ("X-B", "2")]);
        let mut present = Present::of(&m);
        for name in [http::header::TE, HeaderName::from_static("x-a")] {
            m.remove(&name);
            present.removed(&name);
        }
        let f = Fields::with(&m, present);
        assert!(!present.has(TE));
        let x_b = HeaderName::from_static("x-b");
        assert_eq!(f.get_named(&x_b), m.get(&x_b));
        m.insert(http::header::HOST, HeaderValue::from_static("h"));
        present.added(HOST);
        assert!(Fields::with(&m, present).contains(HOST));
    }
}
