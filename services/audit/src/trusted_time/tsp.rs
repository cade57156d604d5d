//! RFC 3161 Time-Stamp Protocol: a client for a time-stamping authority (TSA) and a verifier for
//! the tokens it returns.
//!
//! **Request** ([`TsaClient::timestamp`]): a DER `TimeStampReq` with version 1, a SHA-256
//! `messageImprint` of the bytes to stamp, a random 62-bit `nonce` and `certReq = TRUE` (so the
//! token carries the TSA's certificate), POSTed as `application/timestamp-query`. The answer must
//! be a `TimeStampResp` with status `granted` or `grantedWithMods` and a token that passes
//! [`verify_token`] for those bytes and whose `nonce` equals the one sent.
//!
//! **What [`verify_token`] checks** (token = DER `ContentInfo` holding CMS `SignedData`):
//!
//! 1. Structure: `id-signedData` content holding exactly one `SignerInfo`, whose encapsulated
//!    content is an `id-ct-TSTInfo` TSTInfo (version 1).
//! 2. Imprint: the TSTInfo `messageImprint` is SHA-256, SHA-384 or SHA-512 of `body` (SHA-1 and
//!    other algorithms are refused).
//! 3. Signature, when there is a certificate to check it with — the pinned TSA certificate(s)
//!    given as PEM (only those are considered), otherwise the certificates embedded in the token:
//!    * the signing certificate is the one the `SignerInfo` names (issuer and serial number, or
//!      subject key identifier);
//!    * the signed attributes are present; `contentType` is `id-ct-TSTInfo`; `messageDigest`
//!      equals the hash (the signer's digest algorithm: SHA-256/384/512) of the TSTInfo bytes;
//!    * the ESS `signingCertificateV2` (RFC 5816) or `signingCertificate` (RFC 2634, SHA-1)
//!      attribute's first certificate hash equals the hash of the signing certificate;
//!    * the signature over the DER `SET OF` signed attributes verifies with the certificate's
//!      public key: RSA PKCS #1 v1.5 or ECDSA on P-256 / P-384, with SHA-256/384/512;
//!    * the certificate's only extended key usage is `id-kp-timeStamping`, marked critical
//!      (RFC 3161 2.3), and `genTime` lies within its validity period.
//!
//! **Not checked**: the chain from the TSA certificate to a trusted root, revocation (CRL,
//! OCSP), key usage beyond the extended key usage, the TSA policy OID and `accuracy`, RSA-PSS
//! signatures and curves other than P-256 / P-384. Without a pinned certificate the signature
//! check proves only that the token is intact and signed by the key in the certificate it
//! carries, not who that is: [`TokenInfo::signature`] says which case applied. For a full
//! check against a trust anchor use `openssl ts -verify -token_in -in TOKEN -data BODY -CAfile
//! CA.pem`.
//!
//! `genTime` may have fractional seconds (RFC 3161 allows them; many TSAs send milliseconds),
//! which the `der` crate's `GeneralizedTime` refuses, so TSTInfo is decoded here with its own
//! time parser.

use super::TimeError;
use chrono::{DateTime, TimeZone, Utc};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{AnyRef, Int, ObjectIdentifier, OctetString};
use der::oid::db::{rfc5280, rfc5911, rfc5912};
use der::{Any, Decode, Encode, Reader, Sequence, SliceReader, Tag, TagNumber, Tagged};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use std::time::Duration;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::ext::Extensions;
use x509_cert::Certificate;
use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TimeStampResp, TspVersion};

/// `id-ct-TSTInfo` (RFC 3161 2.4.2).
pub const ID_CT_TST_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
pub const CONTENT_TYPE_QUERY: &str = "application/timestamp-query";
pub const CONTENT_TYPE_REPLY: &str = "application/timestamp-reply";
/// Largest TSA answer read (tokens with a certificate chain are a few KiB).
const MAX_REPLY: usize = 256 * 1024;

/// How the token's signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verified with a TSA certificate the caller supplied: the token comes from that TSA.
    PinnedCertificate,
    /// Verified with the certificate embedded in the token: the token is intact and signed by
    /// that certificate's key, but nothing says the certificate is trustworthy.
    EmbeddedCertificate,
    /// No certificate was supplied or embedded: only the imprint was checked.
    NotChecked,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// When the TSA stamped it (TSTInfo `genTime`, UTC, fractional seconds kept).
    pub gen_time: DateTime<Utc>,
    /// TSTInfo `tsa`, when the TSA names itself (a directory name as an RFC 4514 string).
    pub tsa_name: Option<String>,
    /// TSTInfo `serialNumber`, hex.
    pub serial: String,
    /// TSTInfo `policy` (dotted OID).
    pub policy: String,
    /// TSTInfo `accuracy` in microseconds, when given.
    pub accuracy_us: Option<u64>,
    /// Subject of the certificate the signature was verified with.
    pub signer: Option<String>,
    pub signature: SignatureCheck,
}

/// A token fresh from the TSA: the DER `TimeStampToken` (a `ContentInfo`) and what it says.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub token: Vec<u8>,
    pub info: TokenInfo,
}

/// A client for one TSA (`audit.tsa_url`).
#[derive(Clone)]
pub struct TsaClient {
    url: String,
    http: reqwest::Client,
    pinned: Option<String>,
}

impl std::fmt::Debug for TsaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsaClient").field("url", &self.url).finish()
    }
}

impl TsaClient {
    /// A client for the TSA at `url` (http or https), with a 30 s request timeout.
    pub fn new(url: &str) -> Result<Self, TimeError> {
        Self::with_timeout(url, Duration::from_secs(30))
    }

    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self, TimeError> {
        let bad = |reason: &str| TimeError::Tsa {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the TSA URL must be http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("anshin-audit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            url: url.to_string(),
            http,
            pinned: None,
        })
    }

    /// Checks every token's signature against this TSA certificate (PEM, optionally followed
    /// by more certificates) instead of the one the token carries.
    pub fn pin_certificate(mut self, pem: impl Into<String>) -> Self {
        self.pinned = Some(pem.into());
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Gets a token over SHA-256 of `body` and checks it (see the module docs).
    pub async fn timestamp(&self, body: &[u8]) -> Result<Stamp, TimeError> {
        let imprint = sha2::Sha256::digest(body);
        let nonce = new_nonce();
        let request = request_der(&imprint, &nonce)?;
        let reply = self.post(request).await?;
        let token = token_of_response(&reply)?;
        let parsed = ParsedToken::parse(&token)?;
        if parsed.tst.nonce.as_deref() != Some(&nonce[..]) {
            return Err(TimeError::Mismatch(
                "the token's nonce is not the one sent (a replayed or misdirected answer)".into(),
            ));
        }
        let info = parsed.verify(body, self.pinned.as_deref())?;
        Ok(Stamp { token, info })
    }

    async fn post(&self, request: Vec<u8>) -> Result<Vec<u8>, TimeError> {
        let err = |reason: String| TimeError::Tsa {
            url: self.url.clone(),
            reason,
        };
        let mut resp = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_QUERY)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE_REPLY)
            .body(request)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_REPLY {
                return Err(err(format!("the answer is larger than {MAX_REPLY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(err(format!("HTTP {status}: {}", text.trim())));
        }
        Ok(body)
    }
}

/// 62 random bits as a minimal, positive DER INTEGER body (first byte 0x40..=0x7f).
fn new_nonce() -> Vec<u8> {
    use rand::RngCore;
    let mut n = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n[0] = (n[0] & 0x3f) | 0x40;
    n.to_vec()
}

/// A DER `TimeStampReq` for a SHA-256 imprint: version 1, nonce, certReq TRUE.
pub fn request_der(sha256: &[u8], nonce: &[u8]) -> Result<Vec<u8>, TimeError> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_SHA_256,
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(sha256.to_vec())?,
        },
        req_policy: None,
        nonce: Some(Int::new(nonce)?),
        cert_req: true,
        extensions: None,
    };
    Ok(req.to_der()?)
}

/// The DER `TimeStampToken` of a granted `TimeStampResp`; a refusal becomes
/// [`TimeError::Rejected`] with the TSA's status text and failure info.
pub fn token_of_response(der_bytes: &[u8]) -> Result<Vec<u8>, TimeError> {
    let resp = TimeStampResp::from_der(der_bytes)
        .map_err(|e| TimeError::Malformed(format!("not a TimeStampResp: {e}")))?;
    use cmpv2::status::PkiStatus;
    match resp.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => {
            let mut detail = String::new();
            if let Some(texts) = &resp.status.status_string {
                let t: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                detail.push_str(&format!(" ({})", t.join("; ")));
            }
            if let Some(fail) = &resp.status.fail_info {
                detail.push_str(&format!(" [failInfo {fail:?}]"));
            }
            return Err(TimeError::Rejected {
                status: format!("{other:?}"),
                detail,
            });
        }
    }
    let token = resp.time_stamp_token.ok_or_else(|| {
        TimeError::Malformed("the TSA granted the request but sent no token".into())
    })?;
    Ok(token.to_der()?)
}

/// Checks an RFC 3161 token (DER `TimeStampToken`, i.e. `ContentInfo`) against the bytes it
/// should stamp, and its signature with `tsa_cert_pem` when given (else with the certificate
/// the token carries). See the module docs for exactly what is and is not checked.
pub fn verify_token(
    token_der: &[u8],
    body: &[u8],
    tsa_cert_pem: Option<&str>,
) -> Result<TokenInfo, TimeError> {
    ParsedToken::parse(token_der)?.verify(body, tsa_cert_pem)
}

/// TSTInfo as decoded here: `genTime` stays raw so that fractional seconds can be read.
#[derive(Sequence)]
struct TstInfoRaw<'a> {
    version: TspVersion,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: AnyRef<'a>,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// What is kept of TSTInfo.
struct Tst {
    policy: ObjectIdentifier,
    imprint_alg: ObjectIdentifier,
    imprint: Vec<u8>,
    serial: Vec<u8>,
    gen_time: DateTime<Utc>,
    accuracy_us: Option<u64>,
    nonce: Option<Vec<u8>>,
    tsa: Option<String>,
}

impl Tst {
    fn parse(der_bytes: &[u8]) -> Result<Self, TimeError> {
        let raw = TstInfoRaw::from_der(der_bytes)
            .map_err(|e| TimeError::Malformed(format!("TSTInfo: {e}")))?;
        let accuracy_us = raw.accuracy.as_ref().map(|a| {
            a.seconds.unwrap_or(0).saturating_mul(1_000_000)
                + (a.millis.unwrap_or(0).max(0) as u64) * 1_000
                + a.micros.unwrap_or(0).max(0) as u64
        });
        Ok(Self {
            policy: raw.policy,
            imprint_alg: raw.message_imprint.hash_algorithm.oid,
            imprint: raw.message_imprint.hashed_message.as_bytes().to_vec(),
            serial: raw.serial_number.as_bytes().to_vec(),
            gen_time: generalized_time(&raw.gen_time)?,
            accuracy_us,
            nonce: raw.nonce.map(|n| n.as_bytes().to_vec()),
            tsa: raw.tsa.as_ref().map(general_name),
        })
    }
}

/// GeneralizedTime `YYYYMMDDhhmmss[.f...]Z` (RFC 3161 2.4.2), fractional seconds allowed.
fn generalized_time(any: &AnyRef<'_>) -> Result<DateTime<Utc>, TimeError> {
    let bad = |why: &str| TimeError::Malformed(format!("genTime: {why}"));
    if any.tag() != Tag::GeneralizedTime {
        return Err(bad("not a GeneralizedTime"));
    }
    let s = std::str::from_utf8(any.value()).map_err(|_| bad("not ASCII"))?;
    let s = s
        .strip_suffix('Z')
        .ok_or_else(|| bad("not in UTC (no Z)"))?;
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected YYYYMMDDhhmmss"));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S")
        .map_err(|e| bad(&e.to_string()))?;
    let nanos = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("malformed fraction of a second"));
            }
            let v: i64 = f
                .parse()
                .map_err(|_| bad("malformed fraction of a second"))?;
            v * 10i64.pow(9 - f.len() as u32)
        }
    };
    Ok(Utc.from_utc_datetime(&naive) + chrono::Duration::nanoseconds(nanos))
}

fn general_name(n: &GeneralName) -> String {
    match n {
        GeneralName::DirectoryName(name) => name.to_string(),
        GeneralName::DnsName(s)
        | GeneralName::Rfc822Name(s)
        | GeneralName::UniformResourceIdentifier(s) => s.to_string(),
        GeneralName::RegisteredId(oid) => oid.to_string(),
        other => format!("{other:?}"),
    }
}

/// The hash algorithms accepted for imprints and signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn of(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            rfc5912::ID_SHA_256 => Some(Self::Sha256),
            rfc5912::ID_SHA_384 => Some(Self::Sha384),
            rfc5912::ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

struct ParsedToken {
    signed_data: SignedData,
    signer: SignerInfo,
    /// The signed attributes exactly as signed: the `[0] IMPLICIT` field of the SignerInfo with
    /// its tag replaced by SET OF (RFC 5652 5.4), taken from the raw token so that no
    /// re-encoding (re-sorting) can change them.
    signed_attrs_der: Option<Vec<u8>>,
    /// The TSTInfo DER (the content octets of `eContent`).
    econtent: Vec<u8>,
    tst: Tst,
}

impl ParsedToken {
    fn parse(token_der: &[u8]) -> Result<Self, TimeError> {
        let ci = ContentInfo::from_der(token_der)
            .map_err(|e| TimeError::Malformed(format!("not a ContentInfo: {e}")))?;
        if ci.content_type != rfc5911::ID_SIGNED_DATA {
            return Err(TimeError::Malformed(format!(
                "content type {} is not signedData",
                ci.content_type
            )));
        }
        let signed_data = SignedData::from_der(&ci.content.to_der()?)
            .map_err(|e| TimeError::Malformed(format!("SignedData: {e}")))?;
        let eci = &signed_data.encap_content_info;
        if eci.econtent_type != ID_CT_TST_INFO {
            return Err(TimeError::Malformed(format!(
                "encapsulated content {} is not a TSTInfo",
                eci.econtent_type
            )));
        }
        let econtent = match &eci.econtent {
            Some(c) if c.tag() == Tag::OctetString => c.value().to_vec(),
            _ => {
                return Err(TimeError::Malformed(
                    "the TSTInfo is missing or not in an OCTET STRING".into(),
                ))
            }
        };
        let signers: Vec<&SignerInfo> = signed_data.signer_infos.0.iter().collect();
        let [signer] = signers[..] else {
            return Err(TimeError::Malformed(format!(
                "a timestamp token has exactly one signer, this one has {}",
                signers.len()
            )));
        };
        let signer = signer.clone();
        let tst = Tst::parse(&econtent)?;
        Ok(Self {
            signed_attrs_der: raw_signed_attrs(token_der)?,
            signed_data,
            signer,
            econtent,
            tst,
        })
    }

    fn verify(&self, body: &[u8], pinned_pem: Option<&str>) -> Result<TokenInfo, TimeError> {
        let alg = HashAlg::of(&self.tst.imprint_alg).ok_or_else(|| {
            TimeError::Mismatch(format!(
                "imprint hash algorithm {} is not SHA-256/384/512",
                self.tst.imprint_alg
            ))
        })?;
        if alg.digest(body) != self.tst.imprint {
            return Err(TimeError::Mismatch(
                "the token's message imprint is not the hash of these bytes".into(),
            ));
        }
        let (signature, signer) = self.check_signature(pinned_pem)?;
        let mut serial = self.tst.serial.as_slice();
        while serial.len() > 1 && serial[0] == 0 {
            serial = &serial[1..];
        }
        Ok(TokenInfo {
            gen_time: self.tst.gen_time,
            tsa_name: self.tst.tsa.clone(),
            serial: hex::encode(serial),
            policy: self.tst.policy.to_string(),
            accuracy_us: self.tst.accuracy_us,
            signer,
            signature,
        })
    }

    fn check_signature(
        &self,
        pinned_pem: Option<&str>,
    ) -> Result<(SignatureCheck, Option<String>), TimeError> {
        let sig_err = |m: String| TimeError::Signature(m);
        let (candidates, kind) = match pinned_pem {
            Some(pem) => {
                let certs = Certificate::load_pem_chain(pem.as_bytes()).map_err(|e| {
                    TimeError::Malformed(format!("the TSA certificate is not PEM X.509: {e}"))
                })?;
                (certs, SignatureCheck::PinnedCertificate)
            }
            None => {
                let certs: Vec<Certificate> = self
                    .signed_data
                    .certificates
                    .iter()
                    .flat_map(|set| set.0.iter())
                    .filter_map(|c| match c {
                        CertificateChoices::Certificate(c) => Some(c.clone()),
                        CertificateChoices::Other(_) => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Ok((SignatureCheck::NotChecked, None));
                }
                (certs, SignatureCheck::EmbeddedCertificate)
            }
        };
        let cert = candidates
            .iter()
            .find(|c| names_signer(c, &self.signer.sid))
            .ok_or_else(|| {
                sig_err(match kind {
                    SignatureCheck::PinnedCertificate => {
                        "the token was not signed by the given TSA certificate".into()
                    }
                    _ => "the token does not carry the certificate of its signer".into(),
                })
            })?;
        let attrs = self
            .signer
            .signed_attrs
            .as_ref()
            .zip(self.signed_attrs_der.as_ref())
            .ok_or_else(|| sig_err("the token has no signed attributes".into()))?;
        let (attrs, attrs_der) = attrs;
        let attr = |oid: ObjectIdentifier| -> Result<Option<&Any>, TimeError> {
            let found: Vec<_> = attrs.iter().filter(|a| a.oid == oid).collect();
            match found[..] {
                [] => Ok(None),
                [a] if a.values.len() == 1 => Ok(a.values.iter().next()),
                _ => Err(TimeError::Malformed(format!(
                    "signed attribute {oid} must occur once with one value"
                ))),
            }
        };

        let content_type: ObjectIdentifier = attr(rfc5911::ID_CONTENT_TYPE)?
            .ok_or_else(|| sig_err("no contentType signed attribute".into()))?
            .decode_as()?;
        if content_type != ID_CT_TST_INFO {
            return Err(sig_err(
                "the signed contentType is not id-ct-TSTInfo".into(),
            ));
        }
        let digest_alg = HashAlg::of(&self.signer.digest_alg.oid).ok_or_else(|| {
            sig_err(format!(
                "unsupported digest algorithm {}",
                self.signer.digest_alg.oid
            ))
        })?;
        let message_digest: OctetString = attr(rfc5911::ID_MESSAGE_DIGEST)?
            .ok_or_else(|| sig_err("no messageDigest signed attribute".into()))?
            .decode_as()?;
        if message_digest.as_bytes() != digest_alg.digest(&self.econtent) {
            return Err(sig_err(
                "the signed messageDigest is not the hash of the TSTInfo (the TSTInfo was altered)"
                    .into(),
            ));
        }

        let cert_der = cert.to_der()?;
        if let Some(v) = attr(rfc5911::ID_AA_SIGNING_CERTIFICATE_V_2)? {
            let sc: SigningCertificateV2 = v.decode_as()?;
            let first = sc
                .certs
                .first()
                .ok_or_else(|| sig_err("empty signingCertificateV2".into()))?;
            let oid = first
                .hash_algorithm
                .as_ref()
                .map(|a| a.oid)
                .unwrap_or(rfc5912::ID_SHA_256);
            let h = HashAlg::of(&oid)
                .ok_or_else(|| sig_err(format!("unsupported ESSCertIDv2 hash algorithm {oid}")))?;
            if first.cert_hash.as_bytes() != h.digest(&cert_der) {
                return Err(sig_err(
                    "signingCertificateV2 names a different certificate".into(),
                ));
            }
        } else if let Some(v) = attr(rfc5911::ID_AA_SIGNING_CERTIFICATE)? {
            let sc: SigningCertificate = v.decode_as()?;
            let first = sc
                .certs
                .first()
                .ok_or_else(|| sig_err("empty signingCertificate".into()))?;
            if first.cert_hash.as_bytes() != sha1::Sha1::digest(&cert_der).as_slice() {
                return Err(sig_err(
                    "signingCertificate names a different certificate".into(),
                ));
            }
        } else {
            return Err(sig_err(
                "no ESS signingCertificate(V2) signed attribute (RFC 3161 2.4.1)".into(),
            ));
        }

        check_tsa_certificate(cert, self.tst.gen_time)?;
        verify_signature(
            cert,
            &self.signer.signature_algorithm,
            digest_alg,
            attrs_der,
            self.signer.signature.as_bytes(),
        )?;
        Ok((kind, Some(cert.tbs_certificate.subject.to_string())))
    }
}

/// ESSCertID (RFC 2634 5.4.1).
#[derive(Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// ESSCertIDv2 (RFC 5035 4); the hash algorithm defaults to SHA-256.
#[derive(Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

fn extension(cert: &Certificate, oid: ObjectIdentifier) -> Option<&x509_cert::ext::Extension> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
}

fn names_signer(cert: &Certificate, sid: &SignerIdentifier) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            cert.tbs_certificate.issuer == ias.issuer
                && cert.tbs_certificate.serial_number == ias.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            extension(cert, rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
                .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
                .is_some_and(|own| own == *ski)
        }
    }
}

/// RFC 3161 2.3: the TSA certificate's extended key usage is exactly timeStamping, critical;
/// and the token was made while the certificate was valid.
fn check_tsa_certificate(cert: &Certificate, gen_time: DateTime<Utc>) -> Result<(), TimeError> {
    let err = |m: &str| TimeError::Signature(m.to_string());
    let ext = extension(cert, rfc5280::ID_CE_EXT_KEY_USAGE)
        .ok_or_else(|| err("the TSA certificate has no extended key usage (RFC 3161 2.3)"))?;
    if !ext.critical {
        return Err(err(
            "the TSA certificate's extended key usage is not critical (RFC 3161 2.3)",
        ));
    }
    let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())?;
    if eku.0 != [rfc5280::ID_KP_TIME_STAMPING] {
        return Err(err(
            "the TSA certificate's extended key usage is not exactly timeStamping (RFC 3161 2.3)",
        ));
    }
    let validity = &cert.tbs_certificate.validity;
    let at = Duration::from_secs(u64::try_from(gen_time.timestamp()).unwrap_or(0));
    if at < validity.not_before.to_unix_duration() || at > validity.not_after.to_unix_duration() {
        return Err(err(
            "genTime lies outside the TSA certificate's validity period",
        ));
    }
    Ok(())
}

fn verify_signature(
    cert: &Certificate,
    sig_alg: &AlgorithmIdentifierOwned,
    digest_alg: HashAlg,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TimeError> {
    let err = |m: String| TimeError::Signature(m);
    let ecdsa = |h| (h, true);
    let rsa = |h| (h, false);
    let (hash, is_ecdsa) = match sig_alg.oid {
        rfc5912::RSA_ENCRYPTION => rsa(digest_alg),
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION => rsa(HashAlg::Sha256),
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION => rsa(HashAlg::Sha384),
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION => rsa(HashAlg::Sha512),
        rfc5912::ID_EC_PUBLIC_KEY => ecdsa(digest_alg),
        rfc5912::ECDSA_WITH_SHA_256 => ecdsa(HashAlg::Sha256),
        rfc5912::ECDSA_WITH_SHA_384 => ecdsa(HashAlg::Sha384),
        rfc5912::ECDSA_WITH_SHA_512 => ecdsa(HashAlg::Sha512),
        other => return Err(err(format!("unsupported signature algorithm {other}"))),
    };
    let prehash = hash.digest(message);
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let bad = || err("the signature does not verify with the TSA certificate's key".into());
    match (spki.algorithm.oid, is_ecdsa) {
        (rfc5912::RSA_ENCRYPTION, false) => {
            use rsa::pkcs8::DecodePublicKey;
            let key = rsa::RsaPublicKey::from_public_key_der(&spki.to_der()?)
                .map_err(|e| err(format!("the TSA certificate's RSA key: {e}")))?;
            let scheme = match hash {
                HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            key.verify(scheme, &prehash, signature).map_err(|_| bad())
        }
        (rfc5912::ID_EC_PUBLIC_KEY, true) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let curve: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .ok_or_else(|| err("the TSA certificate's EC key names no curve".into()))?
                .decode_as()?;
            let point = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| err("the TSA certificate's public key is not whole bytes".into()))?;
            let key_err = |e: p256::ecdsa::Error| err(format!("the TSA certificate's key: {e}"));
            match curve {
                rfc5912::SECP_256_R_1 => {
                    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(key_err)?;
                    let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| bad())?;
                    key.verify_prehash(&prehash, &sig).map_err(|_| bad())
                }
                rfc5912::SECP_384_R_1 => {
                    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(key_err)?;
                    let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| bad())?;
                    key.verify_prehash(&prehash, &sig).map_err(|_| bad())
                }
                other => Err(err(format!("unsupported curve {other}"))),
            }
        }
        (key_alg, _) => Err(err(format!(
            "signature algorithm {} does not fit the TSA key ({key_alg})",
            sig_alg.oid
        ))),
    }
}

/// The SignerInfo's `signedAttrs`, raw from the token, re-tagged as SET OF: the bytes the
/// signature covers. `None` when the SignerInfo has none.
fn raw_signed_attrs(token_der: &[u8]) -> Result<Option<Vec<u8>>, TimeError> {
    let malformed = |what: &str| TimeError::Malformed(format!("token structure: {what}"));
    let ctx0 = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    let ctx1 = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N1,
    };
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
    let ci = AnyRef::from_der(token_der)?;
    let mut r = SliceReader::new(ci.value())?;
    let _content_type: AnyRef<'_> = r.decode()?;
    let explicit: AnyRef<'_> = r.decode()?;
    if explicit.tag() != ctx0 {
        return Err(malformed("no [0] content"));
    }
    // SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    //   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos SET OF SignerInfo }
    let sd = AnyRef::from_der(explicit.value())?;
    let mut r = SliceReader::new(sd.value())?;
    for _ in 0..3 {
        let _: AnyRef<'_> = r.decode()?;
    }
    let signer_infos = loop {
        let next: AnyRef<'_> = r.decode()?;
        if next.tag() != ctx0 && next.tag() != ctx1 {
            break next;
        }
    };
    if signer_infos.tag() != Tag::Set {
        return Err(malformed("signerInfos is not a SET"));
    }
    // SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, [0] IMPLICIT signedAttrs
    //   OPTIONAL, signatureAlgorithm, signature, [1] unsignedAttrs OPTIONAL }
    let mut r = SliceReader::new(signer_infos.value())?;
    let si: AnyRef<'_> = r.decode()?;
    let mut r = SliceReader::new(si.value())?;
    for _ in 0..3 {
        let _: AnyRef<'_> = r.decode()?;
    }
    let next: AnyRef<'_> = r.decode()?;
    if next.tag() != ctx0 {
        return Ok(None);
    }
    Ok(Some(AnyRef::new(Tag::Set, next.value())?.to_der()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(s: &str) -> Result<DateTime<Utc>, TimeError> {
        generalized_time(&AnyRef::new(Tag::GeneralizedTime, s.as_bytes()).unwrap())
    }

    #[test]
    fn generalized_time_with_and_without_fractions() {
        assert_eq!(
            gt("20261122041749Z").unwrap().to_rfc3339(),
            "2026-11-22T04:17:49+00:00"
        );
        assert_eq!(
            gt("20261122041749.464Z").unwrap().timestamp_subsec_millis(),
            464
        );
        assert_eq!(
            gt("20261122041749.5Z").unwrap().timestamp_subsec_millis(),
            500
        );
        for bad in [
            "20261122041749",
            "20261122041749.Z",
            "2026112204174Z",
            "20261322041749Z",
            "20261122041749.1234567890Z",
            "20261122041749+0900",
        ] {
            assert!(gt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_der_timestampreqs() {
        let imprint = sha2::Sha256::digest(b"body");
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 8);
        assert!(nonce[0] & 0x80 == 0 && nonce[0] != 0, "positive, minimal");
        let der_bytes = request_der(&imprint, &nonce).unwrap();
        let back = TimeStampReq::from_der(&der_bytes).unwrap();
        assert!(back.cert_req);
        assert_eq!(back.nonce.unwrap().as_bytes(), &nonce[..]);
        assert_eq!(
            back.message_imprint.hashed_message.as_bytes(),
            imprint.as_slice()
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            verify_token(b"\x30\x03\x02\x01\x01", b"x", None),
            Err(TimeError::Malformed(_))
        ));
        assert!(matches!(
            token_of_response(b"not der"),
            Err(TimeError::Malformed(_))
        ));
    }
}
