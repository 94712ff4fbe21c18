//! The example's markup: one page, its two bodies, and escaping.

/// The page's style sheet, inline.
pub const STYLE: &str = include_str!("style.css");

/// Allows nothing but the inline style sheet, by its hash (a unit test
/// checks it against [`STYLE`]).
pub const CSP: &str = "default-src 'none'; \
    style-src 'sha256-bXzc6ek3bnVpQikZGrzOYVYtmU+i4+BOqp9d6Jgo4NU='; \
    form-action 'self'; frame-ancestors 'none'";

/// The whole page around `body`, with a one-shot `notice` above it.
pub fn page(notice: Option<&str>, body: &str) -> String {
    let notice = notice
        .map(|text| format!(r#"<p class="notice" id="notice">{}</p>"#, escape(text)))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in example</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body><main>{notice}{body}</main></body></html>
"#
    )
}

/// What a signed-in visitor sees.
pub fn signed_in(name: &str, visits: u64, token: &str) -> String {
    format!(
        r#"<h1>Hello, <span id="name">{}</span></h1>
<p>Visits since you signed in: <b id="visits">{visits}</b></p>
<form method="post" action="/signout"><input type="hidden" name="csrf_token" value="{token}">
<button>Sign out</button></form>"#,
        escape(name)
    )
}

/// The sign-in form.
pub fn sign_in_form(token: &str) -> String {
    format!(
        r#"<h1>Sign in</h1>
<form method="post" action="/signin"><input type="hidden" name="csrf_token" value="{token}">
<label for="name">Your name</label>
<input type="text" id="name" name="name" maxlength="64" required autofocus>
<label><input type="checkbox" name="remember" value="yes"> Remember me for 30 days</label>
<br><button>Sign in</button></form>"#
    )
}

/// Replaces the characters that could end a text node or an attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_style() {
        let hash = test_support::csp::sha256_source(STYLE);
        assert!(CSP.contains(&format!("style-src '{hash}'")), "{hash}");
        assert!(page(None, "").contains(&format!("<style>{STYLE}</style>")));
    }

    #[test]
    fn names_and_notices_are_escaped() {
        assert!(signed_in("<b>x</b>", 1, "t").contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(page(Some("\"><script>"), "").contains("&quot;&gt;&lt;script&gt;"));
    }
}
