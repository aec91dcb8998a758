//! Where a client is: its country (and continent) from a trusted CDN header,
//! the config's CIDR table, or a MaxMind-format database, in that order.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use ipnet::IpNet;
use switchyard_config::Geo;

use crate::route::fields::Fields;

/// A two-letter code packed in two bytes (country or continent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Code(pub(crate) [u8; 2]);

impl Code {
    /// Accepts two ASCII letters, any case.
    pub(crate) fn parse(s: &str) -> Option<Code> {
        let b = s.trim().as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
            .then(|| Code([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// A client's place, as far as it is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) country: Option<Code>,
    pub(crate) continent: Option<Code>,
}

pub(crate) struct GeoResolver {
    header: Option<http::HeaderName>,
    networks: Vec<(IpNet, Code)>,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
}

impl GeoResolver {
    pub(crate) fn from_config(geo: &Geo) -> anyhow::Result<Self> {
        let header = geo
            .header
            .as_deref()
            .map(http::HeaderName::try_from)
            .transpose()
            .context("routing.geo.header is not a valid header name")?;
        let networks = geo
            .networks
            .iter()
            .filter_map(|(net, c)| Code::parse(c).map(|code| (*net, code)))
            .collect();
        let mmdb = geo.mmdb.as_deref().map(open_mmdb).transpose()?;
        Ok(GeoResolver {
            header,
            networks,
            mmdb,
        })
    }

    /// The geo header, when one is configured (only trusted peers may send it).
    pub(crate) fn header(&self) -> Option<&http::HeaderName> {
        self.header.as_ref()
    }

    /// The client's place; `headers` is consulted only for the geo header,
    /// which the trust boundary has already dropped from untrusted peers.
    pub(crate) fn locate(&self, ip: IpAddr, headers: &Fields) -> Place {
        let country = self
            .header
            .as_ref()
            .and_then(|h| headers.get_named(h))
            .and_then(|v| v.to_str().ok())
            .and_then(Code::parse)
            .or_else(|| {
                self.networks
                    .iter()
                    .find(|(net, _)| net.contains(&ip))
                    .map(|(_, c)| *c)
            });
        if let Some(country) = country {
            return Place {
                country: Some(country),
                continent: continent_of(country),
            };
        }
        self.mmdb
            .as_ref()
            .and_then(|db| db.lookup::<maxminddb::geoip2::Country>(ip).ok().flatten())
            .map(|rec| {
                let country = rec.country.and_then(|c| c.iso_code).and_then(Code::parse);
                let continent = rec
                    .continent
                    .and_then(|c| c.code)
                    .and_then(Code::parse)
                    .or_else(|| country.and_then(continent_of));
                Place { country, continent }
            })
            .unwrap_or_default()
    }
}

fn open_mmdb(path: &Path) -> anyhow::Result<maxminddb::Reader<Vec<u8>>> {
    maxminddb::Reader::open_readfile(path)
        .with_context(|| format!("cannot open MaxMind database {}", path.display()))
}

/// ISO 3166 country codes by continent code (AF, AN, AS, EU, NA, OC, SA).
const CONTINENTS: &[(&str, &str)] = &[
    ("EU", "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK"),
    ("AS", "AE AF AM AZ BD BH BN BT CN GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE"),
    ("AF", "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW"),
    ("NA", "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM PR SV SX TC TT UM US VC VG VI"),
    ("SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
    ("OC", "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV VU WF WS"),
    ("AN", "AQ BV GS HM TF"),
];

/// Country code → index into `CONTINENTS` + 1 (0: unknown), for all 26×26 codes.
fn continent_table() -> &'static [u8; 676] {
    static TABLE: std::sync::OnceLock<[u8; 676]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u8; 676];
        for (n, (_, list)) in CONTINENTS.iter().enumerate() {
            for c in list.split(' ').filter_map(Code::parse) {
                t[slot(c)] = n as u8 + 1;
            }
        }
        t
    })
}

fn slot(c: Code) -> usize {
    (c.0[0] - b'A') as usize * 26 + (c.0[1] - b'A') as usize
}

/// The continent a country lies on.
pub(crate) fn continent_of(country: Code) -> Option<Code> {
    let n = continent_table()[slot(country)];
    (n > 0)
        .then(|| Code::parse(CONTINENTS[n as usize - 1].0))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(header: Option<&str>) -> GeoResolver {
        let geo = Geo {
            networks: vec![
                ("127.0.0.2/32".parse().expect("net"), "DE".into()),
                ("127.0.0.0/8".parse().expect("net"), "US".into()),
            ],
            mmdb: None,
            header: header.map(str::to_string),
            prefer: Default::default(),
        };
        GeoResolver::from_config(&geo).expect("resolver")
    }

    #[test]
    fn most_specific_network_wins_when_sorted() {
        let r = resolver(None);
        let p = r.locate(
            "127.0.0.2".parse().expect("ip"),
            &Fields::new(&http::HeaderMap::new()),
        );
        assert_eq!(p.country, Code::parse("DE"));
        assert_eq!(p.continent, Code::parse("EU"));
        let p = r.locate(
            "127.0.0.9".parse().expect("ip"),
            &Fields::new(&http::HeaderMap::new()),
        );
        assert_eq!(p.country, Code::parse("US"));
        assert_eq!(p.continent, Code::parse("NA"));
    }

    #[test]
    fn trusted_header_takes_precedence() {
        let r = resolver(Some("CF-IPCountry"));
        let mut h = http::HeaderMap::new();
        h.insert("cf-ipcountry", "jp".parse().expect("value"));
        let p = r.locate("127.0.0.2".parse().expect("ip"), &Fields::new(&h));
        assert_eq!(p.country, Code::parse("JP"));
        assert_eq!(p.continent, Code::parse("AS"));
    }

    #[test]
    fn unknown_client_has_no_place() {
        let r = resolver(None);
        assert_eq!(
            r.locate(
                "10.1.1.1".parse().expect("ip"),
                &Fields::new(&http::HeaderMap::new())
            ),
            Place::default()
        );
    }
}
