//! The HTML pages of the tutorial's flow. Every value that came from a
//! client passes through [`escape`] on its way into a page.

use spin_sessions::time::rfc3339;

/// The form pages, in the order a visitor goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `/`: asks for a name (`v1`).
    Welcome,
    /// `/2`: greets by name, asks for a job (`v2`).
    TellMeMore,
    /// `/S`: shows both answers, offers to submit.
    ReadyToSubmit,
    /// `/F`: thanks the visitor.
    ThankYou,
}

impl Page {
    /// Every page, in order.
    pub const ALL: [Page; 4] = [
        Page::Welcome,
        Page::TellMeMore,
        Page::ReadyToSubmit,
        Page::ThankYou,
    ];

    /// The page served at `path`, if any.
    pub fn at(path: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|page| page.path() == path)
    }

    /// Where the page is served.
    pub fn path(self) -> &'static str {
        match self {
            Page::Welcome => "/",
            Page::TellMeMore => "/2",
            Page::ReadyToSubmit => "/S",
            Page::ThankYou => "/F",
        }
    }

    /// The page's title.
    pub fn title(self) -> &'static str {
        match self {
            Page::Welcome => "Welcome",
            Page::TellMeMore => "Tell me more",
            Page::ReadyToSubmit => "Ready to submit?",
            Page::ThankYou => "Thank you",
        }
    }
}

/// What a page shows of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageData {
    /// The name (`v1`), as stored.
    pub v1: String,
    /// The job (`v2`), as stored.
    pub v2: String,
    /// When the answers were submitted (Unix seconds).
    pub submitted_at: Option<i64>,
    /// The token the page's forms carry.
    pub csrf_token: String,
}

/// The pages' style sheet, inline (one request per page).
pub const STYLE: &str = include_str!("style.css");

/// The `Content-Security-Policy` of every page: nothing may load or run but
/// the inline style sheet above, allowed by its hash (no `unsafe-inline`).
/// A unit test checks the hash against [`STYLE`].
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
     style-src 'sha256-QsjW9zQ+rjw34Z9hVb6q6xM/FdirsK5/Iu16jKODiy0='; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Replaces the characters that could end a text node or an attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole HTML document of `page` for a session holding `data`.
pub fn render(page: Page, data: &PageData) -> String {
    let csrf = format!(
        r#"<input type="hidden" name="csrf_token" value="{}">"#,
        escape(&data.csrf_token)
    );
    let body = page_body(page, data, &csrf);
    let title = page.title();
    let steps = steps(page);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body>
<main>
{steps}
<h1>{title}</h1>
{body}
</main>
<footer><span>Your answers are kept in a session for an hour.</span>
<form action="/logout" method="post">{csrf}<button type="submit">Start over</button></form></footer>
</body>
</html>
"#
    )
}

/// The part of the page that differs from page to page.
fn page_body(page: Page, data: &PageData, csrf: &str) -> String {
    let v1 = escape(&data.v1);
    let v2 = escape(&data.v2);
    match page {
        Page::Welcome => format!(
            r#"<form action="/2" method="post">{csrf}
<label for="v1">What is your name?</label>
<input type="text" id="v1" name="v1" value="{v1}" maxlength="1024" autofocus>
<button type="submit">Next</button>
</form>"#
        ),
        Page::TellMeMore => format!(
            r#"<p>Hello, <span id="name">{v1}</span>!</p>
<form action="/S" method="post">{csrf}
<label for="v2">What is your job?</label>
<input type="text" id="v2" name="v2" value="{v2}" maxlength="1024" autofocus>
<button type="submit">Next</button>
</form>
<p><a href="/">previous</a></p>"#
        ),
        Page::ReadyToSubmit => format!(
            r#"<dl><dt>Name</dt><dd id="name">{v1}</dd><dt>Job</dt><dd id="job">{v2}</dd></dl>
<form action="/F" method="post">{csrf}
<input type="hidden" name="DONE" value="yes">
<button type="submit">Submit</button>
</form>
<p><a href="/2">previous</a></p>"#
        ),
        Page::ThankYou => match data.submitted_at {
            Some(at) => format!(
                r#"<p>Thank you.</p><p id="submitted">Your answers were submitted at <time>{}</time>.</p>"#,
                rfc3339(at)
            ),
            None => {
                r#"<p>Nothing has been submitted yet: <a href="/">start here</a>.</p>"#.to_owned()
            }
        },
    }
}

/// The progress bar: one step per page, those before `page` done.
fn steps(page: Page) -> String {
    let mut html = String::from(r#"<ol class="steps">"#);
    let mut done = true;
    for step in Page::ALL {
        if step == page {
            done = false;
            html.push_str(&format!(r#"<li aria-current="step">{}</li>"#, step.title()));
        } else if done {
            html.push_str(&format!(r#"<li class="done">{}</li>"#, step.title()));
        } else {
            html.push_str(&format!("<li>{}</li>", step.title()));
        }
    }
    html.push_str("</ol>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn stored_values_appear_only_escaped() {
        let data = PageData {
            v1: "<script>alert(1)</script>".into(),
            v2: "\"><img src=x onerror=alert(2)>".into(),
            csrf_token: "tok".into(),
            ..PageData::default()
        };
        for page in [Page::Welcome, Page::TellMeMore, Page::ReadyToSubmit] {
            let html = render(page, &data);
            assert!(!html.contains("<script>alert"), "{page:?}");
            assert!(!html.contains("<img"), "{page:?}");
        }
        assert!(render(Page::TellMeMore, &data).contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn forms_are_prefilled_and_carry_the_token() {
        let data = PageData {
            v1: "Ada".into(),
            v2: "Engineer".into(),
            csrf_token: "tok123".into(),
            submitted_at: None,
        };
        let welcome = render(Page::Welcome, &data);
        assert!(welcome.contains(r#"name="v1" value="Ada""#));
        assert!(welcome.contains(r#"name="csrf_token" value="tok123""#));
        assert!(render(Page::TellMeMore, &data).contains(r#"name="v2" value="Engineer""#));
        let submit = render(Page::ReadyToSubmit, &data);
        assert!(submit.contains(r#"name="DONE" value="yes""#) && submit.contains("Engineer"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style() {
        let hash = test_support::csp::sha256_source(STYLE);
        assert!(
            CONTENT_SECURITY_POLICY.contains(&format!("style-src '{hash}'")),
            "update CONTENT_SECURITY_POLICY to {hash}"
        );
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        // The page carries the sheet exactly as hashed.
        let html = render(Page::Welcome, &PageData::default());
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
    }

    #[test]
    fn the_steps_show_where_the_visitor_is() {
        let html = steps(Page::ReadyToSubmit);
        assert_eq!(html.matches(r#"class="done""#).count(), 2);
        assert!(html.contains(r#"<li aria-current="step">Ready to submit?</li>"#));
        assert!(html.contains("<li>Thank you</li>"));
    }

    #[test]
    fn routes_round_trip() {
        for page in Page::ALL {
            assert_eq!(Page::at(page.path()), Some(page));
        }
        assert_eq!(Page::at("/s"), None);
        assert_eq!(Page::at("/2/"), None);
    }
}
