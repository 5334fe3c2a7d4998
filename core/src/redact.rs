//! Keeping the token out of messages: a statement that sets `outseta_auth.token` (a `SET`,
//! `SET LOCAL`, or `set_config('outseta_auth.token', …)`) has its value replaced by
//! `'(hidden)'` wherever such text reaches an error, a notice, a CONTEXT line or the server
//! log (Citus, for one, quotes the statement it was sending when a worker connection fails).

const NAME: &str = "outseta_auth.token";
const HIDDEN: &str = "'(hidden)'";

/// `text` with every value given to `outseta_auth.token` hidden; `None` when it sets none.
pub fn hide_token_values(text: &str) -> Option<String> {
    if !contains_ignore_case(text, NAME) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = find_ignore_case(rest, NAME) {
        let after = at + NAME.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        // `SET outseta_auth.token = v`, `TO v`, or set_config('outseta_auth.token', v, …)
        let value_at = skip_assignment(rest);
        if let Some((i, n)) = value_at.and_then(|i| value_len(&rest[i..]).map(|n| (i, n))) {
            out.push_str(&rest[..i]);
            out.push_str(HIDDEN);
            rest = &rest[i + n..];
            changed = true;
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Where the value starts after the setting's name: past `'`(closing a set_config name),
/// blanks, and `=`, `TO` or `,`.
fn skip_assignment(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'\'') || b.first() == Some(&b'"') {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if b.get(i) == Some(&b'=') || b.get(i) == Some(&b',') {
        i += 1;
    } else if s
        .get(i..i + 2)
        .is_some_and(|w| w.eq_ignore_ascii_case("to"))
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
fn value_len(s: &str) -> Option<usize> {
    let n = s
        .bytes()
        .position(|c| c.is_ascii_whitespace() || b";,)\"".contains(&c))
        .unwrap_or(s.len());
    (n > 0).then_some(n)
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    find_ignore_case(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

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
            let got = hide_token_values(&text).unwrap_or_else(|| panic!("nothing hidden in {text}"));
            assert_eq!(got, want);
            assert!(!got.contains("c2lnbmF0dXJl"));
        }
    }

    #[test]
    fn two_in_one_text_and_text_without_any() {
        let text = format!("SET outseta_auth.token = '{T}'; SET LOCAL outseta_auth.token = '{T}x'");
        let got = hide_token_values(&text).unwrap();
        assert_eq!(got.matches("(hidden)").count(), 2, "{got}");
        assert!(!got.contains(T));
        assert_eq!(hide_token_values("SELECT 1"), None);
        assert_eq!(hide_token_values("SHOW outseta_auth.token"), None);
        assert_eq!(hide_token_values("RESET outseta_auth.token"), None);
        // A setting whose name only starts alike keeps its value.
        assert_eq!(
            hide_token_values("SET outseta_auth.token_header = 'x-outseta-token'").as_deref(),
            None
        );
    }
}
