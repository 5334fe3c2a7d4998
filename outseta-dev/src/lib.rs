//! `outseta-dev`: a local stand-in for Outseta's token issuer, for development, tests,
//! CI and the demo. The real Outseta is not reachable from tests, so this serves a JWKS
//! on 127.0.0.1 and mints RS256 access tokens shaped like Outseta's.
//!
//! It can also misbehave on command ([`Fault`]) so that the extension's handling of a
//! slow, broken or hostile JWKS server can be tested against a real socket.

pub mod gateway;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An RSA-2048 signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pair: KeyPair,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        SigningKey {
            kid: kid.to_string(),
            pair,
        }
    }

    /// An RSA key of 2048, 3072, 4096 or 8192 bits.
    pub fn generate_bits(kid: &str, bits: usize) -> Self {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            other => panic!("no RSA key size of {other} bits"),
        };
        SigningKey {
            kid: kid.to_string(),
            pair: KeyPair::generate(size).expect("RSA key generation"),
        }
    }

    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Result<Self, String> {
        let pair = KeyPair::from_pkcs8(der).map_err(|e| format!("not a PKCS#8 RSA key: {e}"))?;
        Ok(SigningKey {
            kid: kid.to_string(),
            pair,
        })
    }

    pub fn to_pkcs8(&self) -> Vec<u8> {
        let der = self.pair.as_der().expect("PKCS#8 encoding");
        der.as_ref().to_vec()
    }

    /// The public key as a JWK, as Outseta publishes it.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": b64url(public.modulus().big_endian_without_leading_zero()),
            "e": b64url(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// The public key as X.509 SubjectPublicKeyInfo DER (for HS256-confusion attack tests).
    pub fn public_der(&self) -> Vec<u8> {
        self.pair
            .public_key()
            .as_der()
            .expect("SPKI encoding")
            .as_ref()
            .to_vec()
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.public_der());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .expect("RSA signing");
        sig
    }

    /// An RSASSA-PKCS1-v1_5 signature with the hash `alg` names (RS256, RS384, RS512).
    pub fn sign_alg(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let padding = match alg {
            "RS384" => &RSA_PKCS1_SHA384,
            "RS512" => &RSA_PKCS1_SHA512,
            _ => &RSA_PKCS1_SHA256,
        };
        let mut sig = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(padding, &rng, message, &mut sig)
            .expect("RSA signing");
        sig
    }

    /// A compact JWS of exactly this header and payload text, signed with the hash its
    /// `alg` names (RS384, RS512; RS256 otherwise), whatever else the header says.
    pub fn mint_raw(&self, header: &str, payload: &str) -> String {
        let alg = serde_json::from_str::<Value>(header)
            .ok()
            .and_then(|h| h.get("alg").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        );
        let sig = self.sign_alg(&alg, input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// A compact JWS with `{"alg":"RS256","typ":"JWT","kid":...}`.
    pub fn mint(&self, claims: &Value) -> String {
        self.mint_with_header(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// A compact JWS with any header, signed RS256 with this key (for attack tests).
    pub fn mint_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }
}

/// Who a token is for. Anything left `None` gets a plausible default.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub sub: String,
    pub account: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub plan_uid: Option<String>,
    pub subscription_uid: Option<String>,
    pub add_on_uids: Vec<String>,
    pub is_primary: bool,
    /// Seconds until `exp`; negative for an already-expired token.
    pub expires_in: i64,
    /// Extra or replacement claims (e.g. a bad `nbf`).
    pub extra: Map<String, Value>,
}

impl TokenRequest {
    pub fn new(sub: &str, account: &str) -> Self {
        TokenRequest {
            sub: sub.into(),
            account: account.into(),
            is_primary: true,
            expires_in: 3600,
            ..Default::default()
        }
    }

    pub fn from_json(v: &Value) -> Result<Self, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let mut r = TokenRequest::new(
            &s("sub")
                .or_else(|| s("person"))
                .ok_or("\"sub\" (the person uid) is required")?,
            &s("account")
                .or_else(|| s("outseta:accountUid"))
                .ok_or("\"account\" is required")?,
        );
        r.email = s("email");
        r.name = s("name");
        r.plan_uid = s("plan_uid");
        r.subscription_uid = s("subscription_uid");
        if let Some(a) = v.get("add_on_uids").and_then(Value::as_array) {
            r.add_on_uids = a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
        }
        if let Some(p) = v.get("is_primary").and_then(Value::as_bool) {
            r.is_primary = p;
        }
        if let Some(e) = v.get("expires_in").and_then(Value::as_i64) {
            r.expires_in = e;
        }
        if let Some(Value::Object(extra)) = v.get("claims") {
            r.extra = extra.clone();
        }
        Ok(r)
    }
}

/// The claims of an Outseta access token ("JWT Access Token" article), for `req`.
pub fn outseta_claims(req: &TokenRequest, issuer: &str, audience: Option<&str>) -> Value {
    let now = now();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("Person {}", req.sub));
    let (given, family) = name.split_once(' ').unwrap_or((name.as_str(), ""));
    let mut c = json!({
        "nbf": now - 5,
        "iat": now - 5,
        "exp": now + req.expires_in,
        "iss": issuer,
        "sub": req.sub,
        "email": req.email.clone().unwrap_or_else(|| format!("{}@example.com", req.sub.to_lowercase())),
        "name": name,
        "given_name": given,
        "family_name": family,
        "outseta:accountUid": req.account,
        "outseta:isPrimary": if req.is_primary { "1" } else { "0" },
        "outseta:subscriptionUid": req.subscription_uid.clone().unwrap_or_else(|| format!("sub-{}", req.account)),
        "outseta:planUid": req.plan_uid.clone().unwrap_or_else(|| "basic".into()),
        "outseta:addOnUids": req.add_on_uids,
    });
    if let Some(aud) = audience {
        c["aud"] = json!(aud);
    }
    let obj = c.as_object_mut().expect("object");
    for (k, v) in &req.extra {
        obj.insert(k.clone(), v.clone());
    }
    c
}

/// How the JWKS endpoint misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// Answer with this HTTP status and a short text body.
    Status(u16),
    /// Answer 200 with this body instead of the JWKS.
    Body(String),
    /// Sleep this long before answering.
    Slow(Duration),
    /// Answer 302 to this location.
    Redirect(String),
    /// Answer 200 with a body of this many bytes.
    Oversize(usize),
    /// Close the connection without answering.
    Hangup,
}

impl Fault {
    pub fn from_json(v: &Value) -> Result<Fault, String> {
        let mode = v.get("mode").and_then(Value::as_str).unwrap_or("none");
        Ok(match mode {
            "none" => Fault::None,
            "status" => {
                Fault::Status(v.get("status").and_then(Value::as_u64).unwrap_or(500) as u16)
            }
            "body" => Fault::Body(v.get("body").and_then(Value::as_str).unwrap_or("").into()),
            "slow" => Fault::Slow(Duration::from_millis(
                v.get("ms").and_then(Value::as_u64).unwrap_or(10_000),
            )),
            "redirect" => Fault::Redirect(
                v.get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .into(),
            ),
            "oversize" => {
                Fault::Oversize(v.get("bytes").and_then(Value::as_u64).unwrap_or(1 << 20) as usize)
            }
            "hangup" => Fault::Hangup,
            other => return Err(format!("unknown fault mode {other:?}")),
        })
    }
}

/// `token` with its payload replaced by `payload` and the original header and signature
/// kept: the classic tampering attempt, for tests.
pub fn with_payload(token: &str, payload: &[u8]) -> String {
    let mut parts = token.splitn(3, '.');
    let (h, _, sig) = (
        parts.next().unwrap_or(""),
        parts.next(),
        parts.next().unwrap_or(""),
    );
    format!("{h}.{}.{sig}", b64url(payload))
}

/// HMAC-SHA256, for forging `HS256` tokens keyed with public key material in attack tests.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&k, msg).as_ref().to_vec()
}

/// The issuer's state: its keys (the last one signs), claims defaults and faults.
pub struct Issuer {
    pub keys: Vec<SigningKey>,
    pub issuer: String,
    pub audience: Option<String>,
    pub fault: Fault,
    /// Sent as `Cache-Control: max-age` with the JWKS, when set.
    pub max_age: Option<u64>,
    /// Requests seen, by path.
    pub hits: HashMap<String, u64>,
    /// People known to the profile endpoint: custom properties, and whether deleted.
    pub people: HashMap<String, Person>,
    /// Fault of the profile endpoint (`POST /fault {"target": "profile", ...}`).
    pub profile_fault: Fault,
    /// Requests being answered now (a slow fault holds one until it answers).
    pub busy: u64,
    next_kid: u32,
}

/// What the profile endpoint knows of a person beyond the token's claims.
#[derive(Debug, Clone, Default)]
pub struct Person {
    pub deleted: bool,
    pub properties: Map<String, Value>,
}

impl Issuer {
    pub fn new(issuer: &str) -> Self {
        Self::with_key(issuer, SigningKey::generate("outseta-dev-1"))
    }

    pub fn with_key(issuer: &str, key: SigningKey) -> Self {
        Issuer {
            keys: vec![key],
            issuer: issuer.to_string(),
            audience: None,
            fault: Fault::None,
            max_age: None,
            hits: HashMap::new(),
            people: HashMap::new(),
            profile_fault: Fault::None,
            busy: 0,
            next_kid: 2,
        }
    }

    pub fn signing_key(&self) -> &SigningKey {
        self.keys.last().expect("at least one key")
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
    }

    pub fn mint(&self, req: &TokenRequest) -> String {
        self.signing_key()
            .mint(&outseta_claims(req, &self.issuer, self.audience.as_deref()))
    }

    /// Add a new signing key; keep or drop the old ones. Returns the new kid.
    /// The claims of `token` if one of this issuer's current keys signed it (RS256) and it
    /// has not expired: what Outseta's profile endpoint checks before it answers.
    pub fn accepts(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let kid = header.get("kid").and_then(Value::as_str)?;
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            key.pair.public_key().as_ref().to_vec(),
        );
        public.verify(format!("{h}.{p}").as_bytes(), &sig).ok()?;
        let exp = claims.get("exp").and_then(Value::as_f64)?;
        (exp > now() as f64).then_some(claims)
    }

    /// The profile endpoint's answer for `token`: 200 with the profile, or 401.
    pub fn profile(&self, token: &str) -> (u16, Value) {
        let Some(claims) = self.accepts(token) else {
            return (
                401,
                json!({"Message": "Authorization has been denied for this request."}),
            );
        };
        let sub = claims["sub"].as_str().unwrap_or_default().to_string();
        let person = self.people.get(&sub).cloned().unwrap_or_default();
        if person.deleted {
            return (
                401,
                json!({"Message": "Authorization has been denied for this request."}),
            );
        }
        let mut p = json!({
            "Uid": sub,
            "Email": claims["email"],
            "FirstName": claims["given_name"],
            "LastName": claims["family_name"],
            "FullName": claims["name"],
            "ProfileImageS3Url": null,
            "Account": {"Uid": claims["outseta:accountUid"]},
        });
        let obj = p.as_object_mut().expect("object");
        for (k, v) in person.properties {
            obj.insert(k, v);
        }
        (200, p)
    }

    pub fn rotate(&mut self, keep_old: bool) -> String {
        let kid = format!("outseta-dev-{}", self.next_kid);
        self.next_kid += 1;
        if !keep_old {
            self.keys.clear();
        }
        self.keys.push(SigningKey::generate(&kid));
        kid
    }
}

/// A running HTTP server on loopback, serving one [`Issuer`].
pub struct Server {
    pub addr: SocketAddr,
    pub issuer: Arc<Mutex<Issuer>>,
}

impl Server {
    /// Bind `addr` (use port 0 for any free port) and serve in background threads.
    /// Only loopback addresses are accepted.
    pub fn start(addr: &str, issuer: Issuer) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::other(
                "outseta-dev serves on loopback addresses only",
            ));
        }
        let issuer = Arc::new(Mutex::new(issuer));
        let shared = issuer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                // Busy from the accept (not from the thread's start) until the answer is
                // sent, a panic included.
                shared.lock().unwrap().busy += 1;
                std::thread::spawn(move || {
                    struct Done(Arc<Mutex<Issuer>>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            let mut i = self.0.lock().unwrap_or_else(|e| e.into_inner());
                            i.busy -= 1;
                        }
                    }
                    let done = Done(shared);
                    let _ = handle(stream, &done.0);
                });
            }
        });
        Ok(Server { addr, issuer })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks", self.base_url())
    }

    pub fn hits(&self, path: &str) -> u64 {
        self.issuer
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests being answered now.
    pub fn busy(&self) -> u64 {
        self.issuer.lock().unwrap().busy
    }

    pub fn set_fault(&self, fault: Fault) {
        self.issuer.lock().unwrap().fault = fault;
    }

    pub fn mint(&self, req: &TokenRequest) -> String {
        self.issuer.lock().unwrap().mint(req)
    }

    pub fn set_profile_fault(&self, fault: Fault) {
        self.issuer.lock().unwrap().profile_fault = fault;
    }

    /// The profile endpoint's URL (as Outseta's `/api/v1/profile?fields=*`).
    pub fn profile_url(&self) -> String {
        format!("{}/api/v1/profile?fields=*", self.base_url())
    }

    /// Give person `uid` custom properties shown by the profile endpoint.
    pub fn set_properties(&self, uid: &str, properties: Map<String, Value>) {
        let mut i = self.issuer.lock().unwrap();
        i.people.entry(uid.into()).or_default().properties = properties;
    }

    /// Delete (or restore) person `uid`: the profile endpoint answers 401 for their tokens.
    pub fn set_deleted(&self, uid: &str, deleted: bool) {
        let mut i = self.issuer.lock().unwrap();
        i.people.entry(uid.into()).or_default().deleted = deleted;
    }
}

/// Outseta's webhook signature of `body`: `sha256=` and the hex HMAC-SHA256 with the key
/// given as 64 hex characters (as Outseta's dashboard shows it).
pub fn webhook_signature(key_hex: &str, body: &[u8]) -> Result<String, String> {
    let k = key_hex.trim();
    if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the webhook key must be 64 hexadecimal characters".into());
    }
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&k[2 * i..2 * i + 2], 16).expect("hex checked"))
        .collect();
    let tag = hmac_sha256(&key, body);
    Ok(format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The body of an Outseta account webhook (e.g. "Account Updated", "Subscription Updated"):
/// the Account with its current subscription's plan and add-ons, `Updated` now (UTC).
pub fn account_webhook_body(account: &str, plan: &str, add_ons: &[&str]) -> Value {
    json!({
        "Uid": account,
        "Name": format!("Account {account}"),
        "AccountStage": 3,
        "Updated": utc_timestamp(now()),
        "CurrentSubscription": {
            "Uid": format!("sub-{account}"),
            "Plan": {"Uid": plan, "Name": format!("Plan {plan}")},
            "SubscriptionAddOns": add_ons
                .iter()
                .map(|a| json!({"AddOn": {"Uid": a, "Name": format!("Add-on {a}")}}))
                .collect::<Vec<_>>(),
        },
    })
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn utc_timestamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// POST `body` byte for byte to a loopback `http://` URL with extra headers; returns the
/// status and the response body. Loopback only: nothing is ever sent elsewhere.
pub fn post_raw(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs on loopback"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| std::io::Error::other("the URL's host must be a loopback IP:port"))?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(
            "outseta-dev sends to loopback addresses only",
        ));
    }
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp.as_str(), ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The payload of a `Transfer-Encoding: chunked` body (hex size line, data, CRLF; size 0 ends).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

struct Request {
    method: String,
    path: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.take(1 << 20));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut len = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len.min(1 << 16)];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn json_response(stream: &TcpStream, status: u16, v: &Value) -> std::io::Result<()> {
    respond(
        stream,
        status,
        &[("Content-Type", "application/json".into())],
        v.to_string().as_bytes(),
    )
}

fn handle(stream: TcpStream, shared: &Mutex<Issuer>) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let path = req.path.split('?').next().unwrap_or_default().to_string();
    *shared.lock().unwrap().hits.entry(path.clone()).or_default() += 1;
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/.well-known/jwks") => {
            let (fault, jwks, max_age) = {
                let i = shared.lock().unwrap();
                (i.fault.clone(), i.jwks(), i.max_age)
            };
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if let Some(a) = max_age {
                headers.push(("Cache-Control", format!("public, max-age={a}")));
            }
            match fault {
                Fault::None => respond(&stream, 200, &headers, jwks.to_string().as_bytes()),
                Fault::Status(s) => respond(&stream, s, &[], b"server error"),
                Fault::Body(b) => respond(&stream, 200, &headers, b.as_bytes()),
                Fault::Slow(d) => {
                    std::thread::sleep(d);
                    respond(&stream, 200, &headers, jwks.to_string().as_bytes())
                }
                Fault::Redirect(loc) => respond(&stream, 302, &[("Location", loc)], b""),
                Fault::Oversize(n) => {
                    let mut big = br#"{"keys":[],"pad":""#.to_vec();
                    big.resize(n, b'a');
                    respond(&stream, 200, &headers, &big)
                }
                Fault::Hangup => Ok(()),
            }
        }
        ("GET", "/api/v1/profile") => {
            let token = req
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .and_then(|(_, v)| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            let (fault, (status, profile)) = {
                let i = shared.lock().unwrap();
                (i.profile_fault.clone(), i.profile(&token))
            };
            match fault {
                Fault::None => json_response(&stream, status, &profile),
                Fault::Status(s) => respond(&stream, s, &[], b"server error"),
                Fault::Body(b) => respond(&stream, 200, &[], b.as_bytes()),
                Fault::Slow(d) => {
                    std::thread::sleep(d);
                    json_response(&stream, status, &profile)
                }
                Fault::Redirect(loc) => respond(&stream, 302, &[("Location", loc)], b""),
                Fault::Oversize(n) => respond(&stream, 200, &[], &vec![b' '; n]),
                Fault::Hangup => Ok(()),
            }
        }
        ("POST", "/people") => {
            let Some(uid) = body.get("uid").and_then(Value::as_str) else {
                return json_response(&stream, 400, &json!({"error": "\"uid\" is required"}));
            };
            let mut i = shared.lock().unwrap();
            let person = i.people.entry(uid.to_string()).or_default();
            if let Some(d) = body.get("deleted").and_then(Value::as_bool) {
                person.deleted = d;
            }
            if let Some(Value::Object(props)) = body.get("properties") {
                for (k, v) in props {
                    person.properties.insert(k.clone(), v.clone());
                }
            }
            json_response(&stream, 200, &json!({"ok": true}))
        }
        ("GET", "/.well-known/openid-configuration") => {
            let i = shared.lock().unwrap();
            let iss = i.issuer.clone();
            drop(i);
            json_response(
                &stream,
                200,
                &json!({
                    "issuer": iss,
                    "jwks_uri": format!("{}/.well-known/jwks", iss.trim_end_matches('/')),
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            )
        }
        ("POST", "/tokens") => match TokenRequest::from_json(&body) {
            Ok(r) => {
                let token = shared.lock().unwrap().mint(&r);
                json_response(
                    &stream,
                    200,
                    &json!({"access_token": token, "token_type": "bearer"}),
                )
            }
            Err(e) => json_response(&stream, 400, &json!({"error": e})),
        },
        ("POST", "/rotate") => {
            let keep = body
                .get("keep_old")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let kid = shared.lock().unwrap().rotate(keep);
            json_response(&stream, 200, &json!({"kid": kid}))
        }
        ("POST", "/fault") => match Fault::from_json(&body) {
            Ok(f) => {
                let mut i = shared.lock().unwrap();
                if body.get("target").and_then(Value::as_str) == Some("profile") {
                    i.profile_fault = f;
                } else {
                    i.fault = f;
                }
                json_response(&stream, 200, &json!({"ok": true}))
            }
            Err(e) => json_response(&stream, 400, &json!({"error": e})),
        },
        ("GET", "/hits") => {
            let hits = shared.lock().unwrap().hits.clone();
            json_response(&stream, 200, &json!(hits))
        }
        _ => json_response(&stream, 404, &json!({"error": "not found"})),
    }
}

/// A blocking HTTP/1.1 POST to a loopback server, for the CLI and tests.
pub fn post_json(addr: &str, path: &str, body: &Value) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let b = body.to_string();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let json = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(json).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_jwks_and_mints() {
        let server = Server::start("127.0.0.1:0", Issuer::new("http://127.0.0.1")).unwrap();
        let addr = server.addr.to_string();
        let v = post_json(&addr, "/tokens", &json!({"sub": "p1", "account": "a1"})).unwrap();
        let token = v["access_token"].as_str().unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(server.hits("/tokens"), 1);
        let rot = post_json(&addr, "/rotate", &json!({"keep_old": false})).unwrap();
        assert_eq!(rot["kid"], "outseta-dev-2");
        assert_eq!(server.issuer.lock().unwrap().keys.len(), 1);
    }

    #[test]
    fn profile_endpoint_and_deletion() {
        let server = Server::start("127.0.0.1:0", Issuer::new("http://127.0.0.1")).unwrap();
        let token = server.mint(&TokenRequest::new("p1", "a1"));
        let i = server.issuer.lock().unwrap();
        let (status, p) = i.profile(&token);
        assert_eq!(status, 200);
        assert_eq!(p["Uid"], "p1");
        assert_eq!(p["Account"]["Uid"], "a1");
        let tampered = with_payload(&token, br#"{"sub":"p2","exp":9999999999}"#);
        assert_eq!(i.profile(&tampered).0, 401);
        assert_eq!(i.profile("").0, 401);
        drop(i);
        server.set_properties("p1", json!({"Color": "teal"}).as_object().unwrap().clone());
        assert_eq!(
            server.issuer.lock().unwrap().profile(&token).1["Color"],
            "teal"
        );
        server.set_deleted("p1", true);
        assert_eq!(server.issuer.lock().unwrap().profile(&token).0, 401);
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk("4\r\nWiki\r\n6;x=y\r\npedia!\r\n0\r\n\r\n"),
            "Wikipedia!"
        );
        assert_eq!(dechunk("0\r\n\r\n"), "");
        assert_eq!(dechunk("zz\r\nbad"), "");
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_478_399), "2026-11-23T23:59:59Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn webhook_signature_known_answer() {
        // Computed independently with Python's hmac module.
        let key = "6b3a55e0261b0304143f805a24924d0c1c44524821305f31d9277843b8a10f4e";
        assert_eq!(
            webhook_signature(key, br#"{"Uid":"wZmNw7Q2","Name":"Acme"}"#).unwrap(),
            "sha256=0600e2ba44821b7b4372f2bc4d5e7ebd853bc51edab95fdd46a65c163adff740"
        );
        assert!(webhook_signature("abc", b"").is_err());
    }

    #[test]
    fn refuses_non_loopback_bind() {
        assert!(Server::start("0.0.0.0:0", Issuer::new("x")).is_err());
    }

    #[test]
    fn pkcs8_round_trip() {
        let k = SigningKey::generate("a");
        let k2 = SigningKey::from_pkcs8("a", &k.to_pkcs8()).unwrap();
        assert_eq!(k.jwk(), k2.jwk());
    }
}
