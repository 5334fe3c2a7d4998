//! Keeping the token out of messages: a statement that sets `outseta_auth.token` (a `SET`,
//! `SET LOCAL`, or `set_config('outseta_auth.token', …)`) has its value replaced by
//! `'(hidden)'` wherever such text reaches an error, a notice, a CONTEXT line or the server
//! log (Citus, for one, quotes the statement it was sending when a worker connection fails).

const NAME: &[u8] = b"outseta_auth.token";
const HIDDEN: &[u8] = b"'(hidden)'";

/// `text` with every token value hidden; `None` when it holds none. Two rules, on bytes (any
/// server encoding: everything matched is ASCII):
/// - anything that has the shape of a compact JWS whose header starts like JSON
///   (`eyJ…`.`…`.`…`: every JWT, Outseta's included), wherever it stands (a bind parameter
///   in a log line's DETAIL, a parse error quoting the statement, any other form of SET);
/// - the value given to `outseta_auth.token` by `SET … = v`, `SET … TO v` or
///   `set_config('outseta_auth.token', v, …)`, whatever its shape.
pub fn hide_token_values(text: &[u8]) -> Option<Vec<u8>> {
    let after_settings = hide_assigned(text);
    let after_jws = hide_jws(after_settings.as_deref().unwrap_or(text));
    after_jws.or(after_settings)
}

/// The value after each `outseta_auth.token` assignment, hidden.
fn hide_assigned(text: &[u8]) -> Option<Vec<u8>> {
    find_ignore_case(text, NAME)?;
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = find_ignore_case(rest, NAME) {
        let after = at + NAME.len();
        out.extend_from_slice(&rest[..after]);
        rest = &rest[after..];
        if let Some((i, n)) =
            skip_assignment(rest).and_then(|i| value_len(&rest[i..]).map(|n| (i, n)))
        {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(HIDDEN);
            rest = &rest[i + n..];
            changed = true;
        }
    }
    out.extend_from_slice(rest);
    changed.then_some(out)
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Every `eyJ<b64url>.<b64url>.<b64url>` (the last part may be empty), hidden.
fn hide_jws(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < text.len() {
        let starts = text[i..].starts_with(b"eyJ") && (i == 0 || !is_b64url(text[i - 1]));
        if starts {
            if let Some(n) = jws_len(&text[i..]) {
                out.extend_from_slice(b"(hidden)");
                i += n;
                changed = true;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// The length of a compact JWS at the start of `s`: three base64url runs (the first two
/// not empty) joined by dots.
fn jws_len(s: &[u8]) -> Option<usize> {
    let run = |from: usize| s[from..].iter().take_while(|c| is_b64url(**c)).count();
    let h = run(0);
    if h == 0 || s.get(h) != Some(&b'.') {
        return None;
    }
    let p = run(h + 1);
    if p == 0 || s.get(h + 1 + p) != Some(&b'.') {
        return None;
    }
    Some(h + 1 + p + 1 + run(h + p + 2))
}

/// Where the value starts after the setting's name: past `'`(closing a set_config name),
/// blanks, and `=`, `TO` or `,`.
fn skip_assignment(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    if b.first() == Some(&b'\'') || b.first() == Some(&b'"') {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if b.get(i) == Some(&b'=') || b.get(i) == Some(&b',') {
        i += 1;
    } else if b
        .get(i..i + 2)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"to"))
        && b.get(i + 2)
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b'\'')
    {
        i += 2;
    } else {
        return None;
    }
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    (i < b.len()).then_some(i)
}

/// The length of the value at the start of `s`: everything up to a blank, `;`, `,`, `)` or
/// `"`, its quotes included, however deeply the text quoting it doubled them (a statement
/// quoted in a log line's parameters: `''eyJ…''`). A token has no such characters.
fn value_len(s: &[u8]) -> Option<usize> {
    let n = s
        .iter()
        .position(|c| c.is_ascii_whitespace() || b";,)\"".contains(c))
        .unwrap_or(s.len());
    (n > 0).then_some(n)
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

    fn hide(text: &str) -> Option<String> {
        hide_token_values(text.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_jws_anywhere_is_hidden() {
        for text in [
            format!("Parameters: $1 = 'outseta_auth.token', $2 = '{T}'"),
            format!("SET \"outseta_auth\".\"token\" = '{T}'"),
            format!("unterminated quoted string at or near \"'{T}\""),
            format!("UPDATE pg_settings SET setting = '{T}' WHERE name = 'outseta_auth.token'"),
            T.to_string(),
        ] {
            let got = hide(&text).unwrap_or_else(|| panic!("nothing hidden in {text}"));
            assert!(
                !got.contains("c2lnbmF0dXJl") && !got.contains("eyJzdWIiOiJ4In0"),
                "{got}"
            );
        }
        // Not a JWS: left alone.
        assert_eq!(hide("eyJ alone, eyJa.b but no third part"), None);
        // Bytes that are not UTF-8 around it (a LATIN1 database's message).
        let mut latin1 = b"dur\xe9e: ".to_vec();
        latin1.extend_from_slice(T.as_bytes());
        let got = hide_token_values(&latin1).unwrap();
        assert!(!got.windows(12).any(|w| w == b"c2lnbmF0dXJl"));
    }

    #[test]
    fn the_forms_a_token_is_set_with() {
        for (text, want) in [
            (format!("SET LOCAL outseta_auth.token = '{T}'"), "SET LOCAL outseta_auth.token = '(hidden)'"),
            (format!("set outseta_auth.token to '{T}'"), "set outseta_auth.token to '(hidden)'"),
            (format!("SET outseta_auth.token={T};"), "SET outseta_auth.token='(hidden)';"),
            (
                format!("SELECT set_config('outseta_auth.token', '{T}', true)"),
                "SELECT set_config('outseta_auth.token', '(hidden)', true)",
            ),
            (
                format!("while executing command on 127.0.0.1:5703 SQL statement \"SET LOCAL outseta_auth.token = '{T}'\""),
                "while executing command on 127.0.0.1:5703 SQL statement \"SET LOCAL outseta_auth.token = '(hidden)'\"",
            ),
            (format!("SET LOCAL OUTSETA_AUTH.TOKEN = E'{T}'"), "SET LOCAL OUTSETA_AUTH.TOKEN = '(hidden)'"),
            (format!("SET outseta_auth.token = 'a''b{T}'; SELECT 1"), "SET outseta_auth.token = '(hidden)'; SELECT 1"),
            // A statement quoted inside a literal (a log line's parameters): quotes doubled.
            (
                format!("parameters: $1 = 'SQL statement \"SET LOCAL outseta_auth.token = ''{T}''\"'"),
                "parameters: $1 = 'SQL statement \"SET LOCAL outseta_auth.token = '(hidden)'\"'",
            ),
        ] {
            let got = hide(&text).unwrap_or_else(|| panic!("nothing hidden in {text}"));
            assert_eq!(got, want);
            assert!(!got.contains("c2lnbmF0dXJl"));
        }
    }

    #[test]
    fn two_in_one_text_and_text_without_any() {
        let text = format!("SET outseta_auth.token = '{T}'; SET LOCAL outseta_auth.token = '{T}x'");
        let got = hide(&text).unwrap();
        assert_eq!(got.matches("(hidden)").count(), 2, "{got}");
        assert!(!got.contains(T));
        assert_eq!(hide("SELECT 1"), None);
        assert_eq!(hide("SHOW outseta_auth.token"), None);
        assert_eq!(hide("RESET outseta_auth.token"), None);
        // A setting whose name only starts alike keeps its value.
        assert_eq!(
            hide("SET outseta_auth.token_header = 'x-outseta-token'").as_deref(),
            None
        );
    }
}
