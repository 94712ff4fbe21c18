//! The HTML pages of the tutorial's flow. Every value that came from a
//! client passes through [`escape`] on its way into a page.

use session_core::time::rfc3339;
use session_core::SessionRecord;

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
    /// The page served at `path`, if any.
    pub fn at(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Welcome),
            "/2" => Some(Page::TellMeMore),
            "/S" => Some(Page::ReadyToSubmit),
            "/F" => Some(Page::ThankYou),
            _ => None,
        }
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

/// The whole HTML document of `page` for a session holding `record`.
pub fn render(page: Page, record: &SessionRecord) -> String {
    let v1 = escape(record.value("v1").unwrap_or(""));
    let v2 = escape(record.value("v2").unwrap_or(""));
    let token = escape(&record.csrf_token);
    let csrf = format!(r#"<input type="hidden" name="csrf_token" value="{token}">"#);
    let body = match page {
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
        Page::ThankYou => match record.submitted_at {
            Some(at) => format!(
                r#"<p>Thank you.</p><p id="submitted">Your answers were submitted at <time>{}</time>.</p>"#,
                rfc3339(at)
            ),
            None => {
                r#"<p>Nothing has been submitted yet: <a href="/">start here</a>.</p>"#.to_owned()
            }
        },
    };
    let title = page.title();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>{title}</h1>
{body}
<form action="/logout" method="post">{csrf}<button type="submit">Start over</button></form>
</body>
</html>
"#
    )
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
        let mut record = SessionRecord::new(0, "tok".into());
        record
            .values
            .insert("v1".into(), "<script>alert(1)</script>".into());
        record
            .values
            .insert("v2".into(), "\"><img src=x onerror=alert(2)>".into());
        for page in [Page::Welcome, Page::TellMeMore, Page::ReadyToSubmit] {
            let html = render(page, &record);
            assert!(!html.contains("<script>alert"), "{page:?}");
            assert!(!html.contains("<img"), "{page:?}");
        }
        assert!(render(Page::TellMeMore, &record).contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn forms_are_prefilled_and_carry_the_token() {
        let mut record = SessionRecord::new(0, "tok123".into());
        record.values.insert("v1".into(), "Ada".into());
        record.values.insert("v2".into(), "Engineer".into());
        let welcome = render(Page::Welcome, &record);
        assert!(welcome.contains(r#"name="v1" value="Ada""#));
        assert!(welcome.contains(r#"name="csrf_token" value="tok123""#));
        assert!(render(Page::TellMeMore, &record).contains(r#"name="v2" value="Engineer""#));
        let submit = render(Page::ReadyToSubmit, &record);
        assert!(submit.contains(r#"name="DONE" value="yes""#) && submit.contains("Engineer"));
    }

    #[test]
    fn routes_round_trip() {
        for page in [
            Page::Welcome,
            Page::TellMeMore,
            Page::ReadyToSubmit,
            Page::ThankYou,
        ] {
            assert_eq!(Page::at(page.path()), Some(page));
        }
        assert_eq!(Page::at("/s"), None);
        assert_eq!(Page::at("/2/"), None);
    }
}
