//! Reading a certificate's expiry (`notAfter`) from its DER encoding.
//!
//! The validity period is all the server needs from a certificate (to warn about a `manual`
//! certificate that is about to expire, and to schedule ACME renewals), so a few lines walking
//! the fixed start of the structure stand in for a full X.509 parser:
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
//!                               signature SEQUENCE, issuer SEQUENCE,
//!                               validity SEQUENCE { notBefore Time, notAfter Time }, … }
//! Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"   (RFC 5280 §4.1.2.5)
//! ```

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{DateTime, Duration, NaiveDate, Utc};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// How long before expiry a certificate is due for renewal (at most; see [`Validity::renew_at`]).
pub(crate) const RENEWAL_WINDOW: Duration = Duration::days(30);

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl Validity {
    /// Reads the validity period of a DER certificate.
    pub fn of(cert_der: &[u8]) -> anyhow::Result<Self> {
        read_validity(cert_der).context("reading the validity period of a certificate")
    }

    /// When the certificate should be replaced: 30 days before it expires, or with a third of
    /// its lifetime left when it lives less than 90 days (short-lived certificates would
    /// otherwise be due the moment they are issued).
    pub fn renew_at(&self) -> DateTime<Utc> {
        let lifetime = self.not_after - self.not_before;
        self.not_after - RENEWAL_WINDOW.min(lifetime / 3)
    }
}

fn read_validity(cert_der: &[u8]) -> anyhow::Result<Validity> {
    let certificate = Reader(cert_der).expect(SEQUENCE)?;
    let mut tbs = Reader(Reader(certificate).expect(SEQUENCE)?);
    if tbs.peek_tag() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Reader(tbs.expect(SEQUENCE)?);
    let (tag, value) = validity.next()?;
    let not_before = parse_time(tag, value)?;
    let (tag, value) = validity.next()?;
    Ok(Validity {
        not_before,
        not_after: parse_time(tag, value)?,
    })
}

/// A cursor over consecutive DER TLVs.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next TLV's tag and contents.
    fn next(&mut self) -> anyhow::Result<(u8, &'a [u8])> {
        let [tag, first_len, rest @ ..] = self.0 else {
            bail!("truncated DER");
        };
        let (len, rest) = match *first_len {
            short @ 0..=0x7f => (usize::from(short), rest),
            0x80 => bail!("indefinite length is not DER"),
            long => {
                let octets = usize::from(long & 0x7f);
                ensure!(octets <= 4 && rest.len() >= octets, "bad DER length");
                let (len_bytes, rest) = rest.split_at(octets);
                let len = len_bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, rest)
            }
        };
        ensure!(rest.len() >= len, "truncated DER");
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((*tag, value))
    }

    fn expect(&mut self, want: u8) -> anyhow::Result<&'a [u8]> {
        let (tag, value) = self.next()?;
        ensure!(
            tag == want,
            "unexpected DER tag {tag:#04x} (wanted {want:#04x})"
        );
        Ok(value)
    }
}

fn parse_time(tag: u8, value: &[u8]) -> anyhow::Result<DateTime<Utc>> {
    ensure!(value.is_ascii(), "time is not ASCII");
    let text = std::str::from_utf8(value)?;
    let year_digits = match (tag, text.len()) {
        (UTC_TIME, 13) => 2,
        (GENERALIZED_TIME, 15) => 4,
        _ => bail!("unsupported time encoding {text:?}"),
    };
    // ASCII, so every byte offset is a character boundary.
    let (year, rest) = text
        .split_at_checked(year_digits)
        .ok_or_else(|| anyhow!("short time"))?;
    let year = match digits(year)? {
        // RFC 5280: two-digit years 50–99 are 19xx, 00–49 are 20xx.
        yy if year_digits == 2 && yy >= 50 => 1900 + yy,
        yy if year_digits == 2 => 2000 + yy,
        yyyy => yyyy,
    };
    ensure!(rest.ends_with('Z'), "time {text:?} is not in UTC");
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| {
        rest.get(at..at + 2)
            .map_or(Err(anyhow!("short time")), digits)
    });
    let date = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month?), u32::from(day?))
        .ok_or_else(|| anyhow!("invalid date in {text:?}"))?;
    let time = date
        .and_hms_opt(u32::from(hour?), u32::from(minute?), u32::from(second?))
        .ok_or_else(|| anyhow!("invalid time in {text:?}"))?;
    Ok(time.and_utc())
}

fn digits(text: &str) -> anyhow::Result<u16> {
    ensure!(
        text.bytes().all(|b| b.is_ascii_digit()),
        "{text:?} is not a number"
    );
    Ok(text.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    fn cert_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(year, month, day);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn day(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn reads_utc_times() {
        let validity = Validity::of(&cert_expiring(2031, 5, 17)).unwrap();
        assert_eq!(
            validity,
            Validity {
                not_before: day(2020, 1, 1),
                not_after: day(2031, 5, 17)
            }
        );
    }

    #[test]
    fn reads_a_generalized_time_past_2049() {
        let validity = Validity::of(&cert_expiring(2061, 12, 31)).unwrap();
        assert_eq!(validity.not_after, day(2061, 12, 31));
    }

    #[test]
    fn a_ninety_day_certificate_is_renewed_thirty_days_before_expiry() {
        let validity = Validity {
            not_before: day(2030, 1, 1),
            not_after: day(2030, 4, 1),
        };
        assert_eq!(validity.renew_at(), day(2030, 3, 2));
    }

    #[test]
    fn a_short_lived_certificate_is_renewed_with_a_third_of_its_life_left() {
        let validity = Validity {
            not_before: day(2030, 1, 1),
            not_after: day(2030, 1, 7),
        };
        assert_eq!(validity.renew_at(), day(2030, 1, 5));
    }

    #[test]
    fn two_digit_years_from_fifty_are_last_century() {
        assert_eq!(
            parse_time(UTC_TIME, b"991231235959Z").unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let der = cert_expiring(2031, 5, 17);
        for len in 0..der.len() {
            assert!(Validity::of(&der[..len]).is_err());
        }
        assert!(Validity::of(b"\x30\x80").is_err());
        assert!(Validity::of(b"not a certificate").is_err());
        assert!(parse_time(UTC_TIME, b"31051700000+0").is_err());
        assert!(parse_time(UTC_TIME, b"311399000000Z").is_err());
        assert!(parse_time(UTC_TIME, "3105170000é".as_bytes()).is_err());
    }
}
