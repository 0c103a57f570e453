//! GSS-TSIG (RFC 3645): the signer for Active Directory's "secure only" zones.
//!
//! A security context is negotiated with the DNS server by TKEY (RFC 2930 mode 3, over TCP):
//! Kerberos tickets for the service `DNS/<dc-host>` travel inside TKEY records until the context
//! is established. Every UPDATE then carries a TSIG record whose MAC is the context's MIC over
//! the usual TSIG data (RFC 8945 §4.3), and every reply is checked with the context's
//! `verify_mic`. A context is kept per process and server and reused until Kerberos says it
//! expires (or the server forgets it), so a `watch` negotiates once per ticket lifetime.
//!
//! Credentials come from the keytab through `gss_acquire_cred_from` with a private in-memory
//! ticket cache: MIT krb5 fetches a new ticket from the keytab whenever the old one has run out,
//! so nothing outside the applier (`kinit`, `k5start`) has to keep a ticket fresh.
//!
//! Two Samba quirks are handled here: its parser rejects a compressed name in the TSIG record, so
//! the record is written by hand, uncompressed; and it signs its replies over the request MAC
//! without the 2-byte length RFC 8945 puts before it. That layout is accepted only when
//! configured, or detected on the context's first reply (when the RFC layout did not verify and
//! Samba's did); from then on the context accepts only that one layout.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, signed_bitmessage_to_buf};
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::Cred;
use libgssapi::error::Error as GssError;
use libgssapi::name::Name as GssName;
use libgssapi::oid::{GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE};

use super::auth::{GssConfig, GssSecret, ReplyMac};
use super::transport::{read_framed, write_framed};

/// RR types and classes written by hand (hickory-proto has no TKEY type).
const TYPE_TKEY: u16 = 249;
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
/// TKEY mode 3: GSS-API negotiation (RFC 2930 §2.5).
const TKEY_MODE_GSSAPI: u16 = 3;
/// Allowed clock difference for TSIG, as BIND and Windows use.
const FUDGE: u16 = 300;
/// A context this close to its end is renegotiated rather than used: an update must not start
/// with a context that runs out while it is on the wire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Round trips a negotiation may take before it is abandoned (Kerberos takes one, SPNEGO two).
const MAX_TKEY_ROUNDS: usize = 6;

/// The algorithm name, `gss-tsig.`, in wire form.
const GSS_TSIG_WIRE: &[u8] = b"\x08gss-tsig\x00";

// Kerberos error codes (krb5.h) behind the GSS minor status, for one-line errors.
const KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN: i32 = -1_765_328_378;
const KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN: i32 = -1_765_328_377;
const KRB5KDC_ERR_CLIENT_REVOKED: i32 = -1_765_328_366;
const KRB5KDC_ERR_PREAUTH_FAILED: i32 = -1_765_328_360;
const KRB5KRB_AP_ERR_BAD_INTEGRITY: i32 = -1_765_328_353;
const KRB5KRB_AP_ERR_SKEW: i32 = -1_765_328_347;
const KRB5_REALM_UNKNOWN: i32 = -1_765_328_230;
const KRB5_KDC_UNREACH: i32 = -1_765_328_228;
const KRB5_KT_NOTFOUND: i32 = -1_765_328_203;
const KRB5_KT_KVNONOTFOUND: i32 = -1_765_328_154;
const KRB5_REALM_CANT_RESOLVE: i32 = -1_765_328_164;

/// Why a context could not be had; [`super::client`] turns it into a [`super::client::DnsError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GssFailure {
    /// The Kerberos side (the KDC, the keytab, the principal): the text says what to fix.
    Kerberos(String),
    /// The KDC does not know `DNS/<dc_host>`.
    UnknownService { dc_host: String },
    /// The DNS server answered the TKEY query with something other than a GSS-TSIG negotiation.
    NotGssTsig(String),
    /// The DNS exchange itself (connect, timeout, malformed reply).
    Io(std::io::ErrorKind, String),
}

/// Which layout the server's reply MACs use, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Rfc,
    Samba,
}

/// An established context and what signing with it needs.
pub struct Session {
    ctx: ClientCtx,
    /// The TKEY/TSIG key name, e.g. `3141592653.sig-flipbit.`; `key_wire` is its wire form.
    key_name: Name,
    key_wire: Vec<u8>,
    created: Instant,
    expires: Instant,
    layout: Option<Layout>,
    max_age: Option<Duration>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn usable(&self) -> bool {
        let now = Instant::now();
        now + EXPIRY_MARGIN < self.expires && self.max_age.is_none_or(|age| self.created.elapsed() < age)
    }
}

pub type Shared = Arc<Mutex<Session>>;

type SessionKey = (SocketAddr, GssConfig);

/// The contexts of this process, per server and login: a `watch` reuses one across runs.
fn sessions() -> &'static Mutex<HashMap<SessionKey, Shared>> {
    static SESSIONS: OnceLock<Mutex<HashMap<SessionKey, Shared>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

/// Negotiations this process has made (for tests and figures: a reused context adds none).
pub fn negotiations() -> u64 {
    NEGOTIATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

static NEGOTIATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The context for `server`: the one in use if it has time left, else a new one. The flag says
/// whether it was negotiated just now (a rejection on a fresh context is not retried).
pub fn session(server: SocketAddr, config: &GssConfig, timeout: Duration) -> Result<(Shared, bool), GssFailure> {
    let mut all = sessions().lock().unwrap_or_else(PoisonError::into_inner);
    let key = (server, config.clone());
    if let Some(shared) = all.get(&key) {
        let usable = shared.lock().unwrap_or_else(PoisonError::into_inner).usable();
        if usable {
            return Ok((shared.clone(), false));
        }
        all.remove(&key);
    }
    let session = negotiate(server, config, timeout)?;
    let shared = Arc::new(Mutex::new(session));
    all.insert(key, shared.clone());
    Ok((shared, true))
}

/// Drops the context for `server` (the server no longer knows it): the next update negotiates.
pub fn forget(server: SocketAddr, config: &GssConfig) {
    let mut all = sessions().lock().unwrap_or_else(PoisonError::into_inner);
    all.remove(&(server, config.clone()));
}

/// Kerberos credentials for the configured principal.
fn credentials(config: &GssConfig) -> Result<Cred, GssFailure> {
    match &config.secret {
        GssSecret::Keytab(path) => {
            // GSS would only say "no key table entry found" for a file it cannot open.
            File::open(path)
                .map_err(|e| GssFailure::Kerberos(format!("cannot read keytab {}: {e}", path.display())))?;
            let keytab = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| GssFailure::Kerberos(format!("keytab path {} holds a NUL byte", path.display())))?;
            acquire_from(config, c"client_keytab", &keytab)
        }
    }
}

/// `gss_acquire_cred_from` with the keytab as `client_keytab` and a ccache of this process's
/// own: MIT krb5 gets (and later renews) the tickets from the keytab by itself.
fn acquire_from(config: &GssConfig, secret_key: &CStr, secret: &CStr) -> Result<Cred, GssFailure> {
    use libgssapi_sys::{
        GSS_S_COMPLETE, OM_uint32, gss_OID_desc, gss_acquire_cred_from, gss_buffer_desc, gss_cred_id_t,
        gss_import_name, gss_key_value_element_desc, gss_key_value_set_desc, gss_name_t, gss_release_name,
    };
    let principal = &config.principal;
    let fail = |what: &str| GssFailure::Kerberos(format!("{what} for principal {principal:?}"));
    let cache: String = principal
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let ccache_c = CString::new(format!("MEMORY:flipbit-dns-{cache}")).map_err(|_| fail("bad cache name"))?;
    let ccache = c"ccache";
    let mut elements = [
        gss_key_value_element_desc {
            key: secret_key.as_ptr(),
            value: secret.as_ptr(),
        },
        gss_key_value_element_desc {
            key: ccache.as_ptr(),
            value: ccache_c.as_ptr(),
        },
    ];
    let store = gss_key_value_set_desc {
        count: elements.len() as OM_uint32,
        elements: elements.as_mut_ptr(),
    };
    // The Kerberos principal name type, 1.2.840.113554.1.2.2.1.
    let mut krb5_principal_oid = *b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01";
    let mut name_type = gss_OID_desc {
        length: krb5_principal_oid.len() as OM_uint32,
        elements: krb5_principal_oid.as_mut_ptr().cast(),
    };
    let mut principal_bytes = principal.as_bytes().to_vec();
    let mut buffer = gss_buffer_desc {
        length: principal_bytes.len(),
        value: principal_bytes.as_mut_ptr().cast(),
    };
    let mut minor: OM_uint32 = 0;
    let mut name: gss_name_t = ptr::null_mut();
    // SAFETY: every pointer refers to a local that outlives the call; the name is released below
    // and the credential handle is owned by the returned `Cred`.
    unsafe {
        let major = gss_import_name(&mut minor, &mut buffer, &mut name_type, &mut name);
        if major != GSS_S_COMPLETE {
            return Err(fail("not a valid Kerberos principal name"));
        }
        let mut cred: gss_cred_id_t = ptr::null_mut();
        let major = gss_acquire_cred_from(
            &mut minor,
            name,
            0xffff_ffff, // GSS_C_INDEFINITE
            ptr::null_mut(),
            1, // GSS_C_INITIATE
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        );
        let mut release_minor: OM_uint32 = 0;
        gss_release_name(&mut release_minor, &mut name);
        if major != GSS_S_COMPLETE {
            let error = GssError {
                major: libgssapi::error::MajorFlags::from_bits_retain(major),
                minor,
            };
            return Err(kerberos_failure(config, error));
        }
        Ok(Cred::from_c(cred))
    }
}

/// RFC 3645 §3.1: TKEY queries over one TCP connection until the context is established.
fn negotiate(server: SocketAddr, config: &GssConfig, timeout: Duration) -> Result<Session, GssFailure> {
    let started = Instant::now();
    let cred = credentials(config)?;
    let service = format!("DNS@{}", config.dc_host);
    let target = GssName::new(service.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
        .map_err(|e| GssFailure::Kerberos(format!("service name {service:?} is not valid: {e}")))?;
    let flags = CtxFlags::GSS_C_MUTUAL_FLAG | CtxFlags::GSS_C_REPLAY_FLAG | CtxFlags::GSS_C_INTEG_FLAG;
    let mut ctx = ClientCtx::new(Some(cred), target, flags, Some(GSS_MECH_SPNEGO));
    let key_text = format!("{}.sig-flipbit.", rand_u32());
    let key_name = Name::from_ascii(&key_text).map_err(|e| GssFailure::Kerberos(format!("key name: {e}")))?;
    let key_wire = name_wire(&key_name);

    let io = |e: std::io::Error| GssFailure::Io(e.kind(), format!("TKEY exchange with {server}: {e}"));
    let mut stream: Option<TcpStream> = None;
    let mut input: Option<Vec<u8>> = None;
    for _ in 0..MAX_TKEY_ROUNDS {
        let token = ctx
            .step(input.as_deref(), None)
            .map_err(|e| kerberos_failure(config, e))?;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            break;
        };
        let stream = match &mut stream {
            Some(stream) => stream,
            None => {
                let s = TcpStream::connect_timeout(&server, timeout).map_err(io)?;
                s.set_read_timeout(Some(timeout)).map_err(io)?;
                s.set_write_timeout(Some(timeout)).map_err(io)?;
                stream.insert(s)
            }
        };
        let id = rand_u32() as u16;
        write_framed(stream, &tkey_query(id, &key_wire, &token)).map_err(io)?;
        let reply = read_framed(stream).map_err(io)?;
        let tkey = parse_tkey_reply(&reply, id)?;
        if ctx.is_complete() {
            break;
        }
        input = Some(tkey.key);
        if input.as_ref().is_some_and(Vec::is_empty) {
            return Err(GssFailure::NotGssTsig("its TKEY answer carried no GSS token".into()));
        }
    }
    if !ctx.is_complete() {
        return Err(GssFailure::NotGssTsig(format!(
            "the GSS negotiation did not complete in {MAX_TKEY_ROUNDS} TKEY round trips"
        )));
    }
    let lifetime = ctx.lifetime().unwrap_or(Duration::from_secs(3600));
    NEGOTIATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        lifetime_s = lifetime.as_secs(),
        key = %key_name,
        "GSS-TSIG context established"
    );
    let now = Instant::now();
    Ok(Session {
        ctx,
        key_name,
        key_wire,
        created: now,
        expires: now + lifetime,
        layout: match config.reply_mac {
            ReplyMac::Detect => None,
            ReplyMac::Rfc => Some(Layout::Rfc),
            ReplyMac::Samba => Some(Layout::Samba),
        },
        max_age: config.max_context_age,
    })
}

/// The one-line failure for a GSS error, by the Kerberos code behind it.
fn kerberos_failure(config: &GssConfig, error: GssError) -> GssFailure {
    let principal = &config.principal;
    let realm = principal.rsplit_once('@').map_or("(default realm)", |(_, r)| r);
    let krb5_config = std::env::var("KRB5_CONFIG").unwrap_or_else(|_| "/etc/krb5.conf".into());
    let keytab = match &config.secret {
        GssSecret::Keytab(path) => format!("keytab {}", path.display()),
    };
    // SPNEGO does not always pass the Kerberos code up as the minor status; its text does.
    let message = one_line(&error.to_string());
    let code = match error.minor as i32 {
        0 => KRB5_TEXTS
            .iter()
            .find(|(_, text)| message.contains(text))
            .map_or(0, |(code, _)| *code),
        code => KRB5_TEXTS
            .iter()
            .find(|(_, text)| message.contains(text))
            .map_or(code, |(known, _)| *known),
    };
    let text = match code {
        KRB5_KDC_UNREACH => format!(
            "cannot reach a Kerberos KDC for realm {realm} (check `kdc =` for it in {krb5_config}, and that the DC's port 88 answers)"
        ),
        KRB5_REALM_UNKNOWN | KRB5_REALM_CANT_RESOLVE => {
            format!("no KDC is configured for realm {realm} (add it under [realms] in {krb5_config})")
        }
        KRB5KRB_AP_ERR_SKEW => format!(
            "clock skew too great between this host and the KDC of {realm} (Kerberos allows 5 minutes: sync this host's clock, e.g. with chrony, to the domain's)"
        ),
        KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN => format!(
            "the KDC of {realm} does not know principal {principal} (check --kerberos-principal: the account's name, @, the realm in capitals)"
        ),
        KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN => {
            return GssFailure::UnknownService {
                dc_host: config.dc_host.clone(),
            };
        }
        KRB5KDC_ERR_CLIENT_REVOKED => format!("the account {principal} is disabled or locked out in {realm}"),
        KRB5KDC_ERR_PREAUTH_FAILED | KRB5KRB_AP_ERR_BAD_INTEGRITY | KRB5_KT_NOTFOUND | KRB5_KT_KVNONOTFOUND => {
            format!(
                "the {keytab} holds no current key for {principal} (export it again after a password change: `samba-tool domain exportkeytab` or `ktpass`)"
            )
        }
        _ => format!(
            "Kerberos login of {principal} failed: {}",
            message
                .replace("Unspecified GSS failure. Minor code may provide more information ", "")
                .replace('\0', "")
        ),
    };
    GssFailure::Kerberos(text)
}

/// MIT krb5's messages for the codes above, as `gss_display_status` shows them.
const KRB5_TEXTS: &[(i32, &str)] = &[
    (KRB5_KDC_UNREACH, "Cannot contact any KDC"),
    (KRB5_REALM_UNKNOWN, "Cannot find KDC for realm"),
    (KRB5KRB_AP_ERR_SKEW, "Clock skew too great"),
    (KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN, "Server not found in Kerberos database"),
    // "Client 'name@REALM' not found in Kerberos database"
    (KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN, "not found in Kerberos database"),
    (KRB5KDC_ERR_CLIENT_REVOKED, "Client's credentials have been revoked"),
    (KRB5KDC_ERR_PREAUTH_FAILED, "Preauthentication failed"),
    (KRB5_KT_NOTFOUND, "Key table entry not found"),
    (
        KRB5_KT_KVNONOTFOUND,
        "Key version number for principal in key table is incorrect",
    ),
];

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn rand_u32() -> u32 {
    // The message-id generator hickory uses for queries is random enough for key names too.
    let a = hickory_proto::op::Message::query().metadata.id;
    let b = hickory_proto::op::Message::query().metadata.id;
    (u32::from(a) << 16) | u32::from(b)
}

/// A name in canonical (lowercase, uncompressed) wire form.
fn name_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.to_lowercase().iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// A TKEY query (RFC 2930 §2, RFC 3645 §3.1.1): the question `<key> TKEY ANY`, and in the
/// additional section the TKEY record carrying `token`.
fn tkey_query(id: u16, key_wire: &[u8], token: &[u8]) -> Vec<u8> {
    let now = super::message::unix_now() as u32;
    let mut m = Vec::with_capacity(64 + token.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]); // QUERY; QD 1, AN 0, NS 0, AR 1
    m.extend_from_slice(key_wire);
    m.extend_from_slice(&TYPE_TKEY.to_be_bytes());
    m.extend_from_slice(&CLASS_ANY.to_be_bytes());
    let mut rdata = Vec::with_capacity(32 + token.len());
    rdata.extend_from_slice(GSS_TSIG_WIRE);
    rdata.extend_from_slice(&now.to_be_bytes()); // inception
    rdata.extend_from_slice(&now.wrapping_add(86_400).to_be_bytes()); // expiration
    rdata.extend_from_slice(&TKEY_MODE_GSSAPI.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes()); // error
    rdata.extend_from_slice(&(token.len() as u16).to_be_bytes());
    rdata.extend_from_slice(token);
    rdata.extend_from_slice(&0u16.to_be_bytes()); // other size
    m.extend_from_slice(key_wire);
    m.extend_from_slice(&TYPE_TKEY.to_be_bytes());
    m.extend_from_slice(&CLASS_ANY.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    m
}

/// The parts of a TKEY answer the negotiation needs.
#[derive(Debug)]
struct TkeyAnswer {
    key: Vec<u8>,
}

/// Reads the TKEY record of a reply; anything else is a server that does not do GSS-TSIG.
fn parse_tkey_reply(raw: &[u8], id: u16) -> Result<TkeyAnswer, GssFailure> {
    let malformed = || GssFailure::NotGssTsig("its answer to the TKEY query is malformed".into());
    let mut r = Reader { buf: raw, pos: 0 };
    let (rid, flags) = (r.u16().ok_or_else(malformed)?, r.u16().ok_or_else(malformed)?);
    if rid != id || flags & 0x8000 == 0 {
        return Err(GssFailure::NotGssTsig(
            "its answer does not match the TKEY query".into(),
        ));
    }
    let rcode = flags & 0x000f;
    let counts: Vec<u16> = (0..4).map(|_| r.u16()).collect::<Option<_>>().ok_or_else(malformed)?;
    if rcode != 0 {
        return Err(GssFailure::NotGssTsig(format!(
            "it answered the TKEY query with {}",
            super::error::Rcode(hickory_proto::op::ResponseCode::from(0, rcode as u8))
        )));
    }
    for _ in 0..counts[0] {
        r.skip_name().ok_or_else(malformed)?;
        r.take(4).ok_or_else(malformed)?;
    }
    for _ in 0..usize::from(counts[1]) + usize::from(counts[2]) {
        r.skip_name().ok_or_else(malformed)?;
        let rtype = r.u16().ok_or_else(malformed)?;
        r.take(6).ok_or_else(malformed)?;
        let len = r.u16().ok_or_else(malformed)?;
        let rdata = r.take(usize::from(len)).ok_or_else(malformed)?;
        if rtype != TYPE_TKEY {
            continue;
        }
        let mut d = Reader { buf: rdata, pos: 0 };
        d.skip_name().ok_or_else(malformed)?;
        d.take(8).ok_or_else(malformed)?; // inception, expiration
        let mode = d.u16().ok_or_else(malformed)?;
        let error = d.u16().ok_or_else(malformed)?;
        let key_len = d.u16().ok_or_else(malformed)?;
        let key = d.take(usize::from(key_len)).ok_or_else(malformed)?.to_vec();
        if error != 0 {
            return Err(GssFailure::NotGssTsig(format!("its TKEY answer carries error {error}")));
        }
        if mode != TKEY_MODE_GSSAPI {
            return Err(GssFailure::NotGssTsig(format!(
                "its TKEY answer has mode {mode}, not 3"
            )));
        }
        return Ok(TkeyAnswer { key });
    }
    Err(GssFailure::NotGssTsig(
        "its answer to the TKEY query holds no TKEY record".into(),
    ))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips a name, compressed or not.
    fn skip_name(&mut self) -> Option<()> {
        loop {
            let len = *self.take(1)?.first()?;
            match len {
                0 => return Some(()),
                l if l & 0xc0 == 0xc0 => {
                    self.take(1)?;
                    return Some(());
                }
                l => {
                    self.take(usize::from(l))?;
                }
            }
        }
    }
}

/// Appends a TSIG record signed with the context's MIC to `wire` (an UPDATE with message id
/// `id`, no TSIG yet), uncompressed, and counts it in ARCOUNT. Returns the MAC, which the reply's
/// MAC covers.
pub fn sign(shared: &Shared, wire: &mut Vec<u8>, id: u16, now: u64) -> Result<Vec<u8>, String> {
    let mut session = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if wire.len() < 12 {
        return Err("message shorter than a DNS header".into());
    }
    let mut tbs = Vec::with_capacity(wire.len() + 64);
    tbs.extend_from_slice(wire);
    tbs.extend_from_slice(&session.key_wire);
    tbs.extend_from_slice(&CLASS_ANY.to_be_bytes());
    tbs.extend_from_slice(&0u32.to_be_bytes());
    tbs.extend_from_slice(GSS_TSIG_WIRE);
    tbs.extend_from_slice(&time48(now));
    tbs.extend_from_slice(&FUDGE.to_be_bytes());
    tbs.extend_from_slice(&0u16.to_be_bytes()); // error
    tbs.extend_from_slice(&0u16.to_be_bytes()); // other len
    let mac = session
        .ctx
        .get_mic(&tbs)
        .map_err(|e| format!("GSS get_mic failed: {}", one_line(&e.to_string())))?
        .to_vec();
    let mut rdata = Vec::with_capacity(32 + mac.len());
    rdata.extend_from_slice(GSS_TSIG_WIRE);
    rdata.extend_from_slice(&time48(now));
    rdata.extend_from_slice(&FUDGE.to_be_bytes());
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes()); // error
    rdata.extend_from_slice(&0u16.to_be_bytes()); // other len
    wire.extend_from_slice(&session.key_wire);
    wire.extend_from_slice(&TYPE_TSIG.to_be_bytes());
    wire.extend_from_slice(&CLASS_ANY.to_be_bytes());
    wire.extend_from_slice(&0u32.to_be_bytes());
    wire.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    wire.extend_from_slice(&rdata);
    let arcount = u16::from_be_bytes([wire[10], wire[11]]).wrapping_add(1);
    wire[10..12].copy_from_slice(&arcount.to_be_bytes());
    Ok(mac)
}

fn time48(now: u64) -> [u8; 6] {
    let b = now.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Checks a reply's TSIG against the context: our key name, gss-tsig, a time within the fudge,
/// and a MIC over the request MAC and the reply (RFC 8945 §4.3.3, or Samba's layout where that
/// is configured or was detected on this context).
pub fn verify(shared: &Shared, raw: &[u8], request_mac: &[u8], now: u64) -> Result<(), String> {
    let mut session = shared.lock().unwrap_or_else(PoisonError::into_inner);
    let (tbs, tsig) = signed_bitmessage_to_buf(raw, None, true).map_err(|e| e.to_string())?;
    if !tsig.name.eq_case(&session.key_name) && tsig.name.to_lowercase() != session.key_name.to_lowercase() {
        return Err(format!(
            "signed with key {}, not this context's {}",
            tsig.name, session.key_name
        ));
    }
    let data = &tsig.data;
    if data.algorithm != TsigAlgorithm::Gss {
        return Err(format!("signed with {}, not gss-tsig", data.algorithm));
    }
    if now.abs_diff(data.time) > u64::from(data.fudge.max(FUDGE)) {
        return Err(format!(
            "signed at {}, more than the fudge from this host's clock ({now})",
            data.time
        ));
    }
    let layouts: &[Layout] = match session.layout {
        Some(Layout::Rfc) => &[Layout::Rfc],
        Some(Layout::Samba) => &[Layout::Samba],
        None => &[Layout::Rfc, Layout::Samba],
    };
    let mut last = String::new();
    for &layout in layouts {
        let mut covered = Vec::with_capacity(tbs.len() + request_mac.len() + 2);
        if layout == Layout::Rfc {
            covered.extend_from_slice(&(request_mac.len() as u16).to_be_bytes());
        }
        covered.extend_from_slice(request_mac);
        covered.extend_from_slice(&tbs);
        match session.ctx.verify_mic(&covered, &data.mac) {
            Ok(()) => {
                if session.layout.is_none() {
                    if layout == Layout::Samba {
                        tracing::info!(
                            "the DNS server signs replies in Samba's layout (no request-MAC length); only that layout is accepted on this context"
                        );
                    }
                    session.layout = Some(layout);
                }
                return Ok(());
            }
            Err(e) => last = one_line(&e.to_string()),
        }
    }
    Err(format!("the MIC does not verify: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tkey_query_is_uncompressed_and_parses_back() {
        let key = name_wire(&Name::from_ascii("12.sig-flipbit.").unwrap());
        let wire = tkey_query(7, &key, b"token");
        let parsed = hickory_proto::op::Message::from_vec(&wire).unwrap();
        assert_eq!(parsed.metadata.id, 7);
        assert_eq!(parsed.queries.len(), 1);
        assert_eq!(parsed.additionals.len(), 1);
        // The owner name is written out in full, not as a pointer to the question.
        let owner_at = 12 + key.len() + 4;
        assert_eq!(&wire[owner_at..owner_at + key.len()], &key[..]);
    }

    #[test]
    fn a_reply_without_tkey_is_not_gss_tsig() {
        let mut reply = hickory_proto::op::Message::new(
            9,
            hickory_proto::op::MessageType::Response,
            hickory_proto::op::OpCode::Query,
        );
        reply.metadata.response_code = hickory_proto::op::ResponseCode::Refused;
        let err = parse_tkey_reply(&reply.to_vec().unwrap(), 9).unwrap_err();
        assert_eq!(
            err,
            GssFailure::NotGssTsig("it answered the TKEY query with REFUSED".into())
        );
        reply.metadata.response_code = hickory_proto::op::ResponseCode::NoError;
        let err = parse_tkey_reply(&reply.to_vec().unwrap(), 9).unwrap_err();
        assert!(matches!(err, GssFailure::NotGssTsig(t) if t.contains("no TKEY record")));
    }

    #[test]
    fn kerberos_codes_read_as_what_to_fix() {
        let config = GssConfig {
            principal: "svc@EXAMPLE.TEST".into(),
            secret: GssSecret::Keytab("/etc/flipbit/dns.keytab".into()),
            dc_host: "dc1.example.test".into(),
            reply_mac: ReplyMac::Detect,
            max_context_age: None,
        };
        let err = |minor: i32| {
            kerberos_failure(
                &config,
                GssError {
                    major: libgssapi::error::MajorFlags::GSS_S_FAILURE,
                    minor: minor as u32,
                },
            )
        };
        assert!(
            matches!(err(KRB5_KDC_UNREACH), GssFailure::Kerberos(t) if t.starts_with("cannot reach a Kerberos KDC for realm EXAMPLE.TEST"))
        );
        assert!(matches!(err(KRB5KRB_AP_ERR_SKEW), GssFailure::Kerberos(t) if t.starts_with("clock skew too great")));
        assert_eq!(
            err(KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN),
            GssFailure::UnknownService {
                dc_host: "dc1.example.test".into()
            }
        );
        assert!(
            matches!(err(KRB5_KT_NOTFOUND), GssFailure::Kerberos(t) if t.contains("keytab /etc/flipbit/dns.keytab holds no current key"))
        );
    }
}
