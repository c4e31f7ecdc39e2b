//! Error bodies as Glance sends them: Glance's errors are webob's `HTTPException`s, whose
//! `generate_response` (webob 1.8, `webob/exc.py`) negotiates the body's media type and fills
//! one of three templates. This module is that code, rule for rule, so that a client reads from
//! glint what it reads from Glance:
//!
//! - [`choose`]: webob offers `text/html` then `application/json` to the request's `Accept`
//!   (`AcceptValidHeader.acceptable_offers` in `webob/acceptparse.py`): each offer takes the
//!   quality of the most specific media range that matches it (`type/subtype` without
//!   parameters, then `type/*`, then `*/*`; a range with media type parameters matches neither
//!   offer, since they have none), offers of quality 0 drop out, the highest quality wins, and
//!   on a tie the first offer, HTML. No offer acceptable, which includes no `Accept` header
//!   (webob reads it as an empty list), gives plain text. A header that is not valid RFC 7231
//!   `Accept` syntax is ignored (`AcceptInvalidHeader`): every offer is acceptable, so HTML.
//! - [`render`]: the body template (`${explanation}<br /><br />\n${detail}\n${html_comment}\n`,
//!   or the 405 one), escaped for HTML in the HTML page, stripped of tags in plain text, as is
//!   in JSON's `message`; the JSON is Python's `json.dumps` of `{"message", "code", "title"}`,
//!   in that order, with its separators and ASCII escapes.
//!
//! So `*/*` and `application/json, text/plain, */*` get HTML, `application/json` gets JSON, and
//! `text/plain` or no `Accept` gets text. glanceclient (requests' `Accept: */*`) reads the HTML
//! page's text lines; openstacksdk (`Accept: application/json`) reads JSON's `message`.

/// The media type of an error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Plain,
}

impl Format {
    /// Its type and subtype, as an offer matched against `Accept`.
    fn media_type(self) -> (&'static str, &'static str) {
        match self {
            Format::Html => ("text", "html"),
            Format::Json => ("application", "json"),
            Format::Plain => ("text", "plain"),
        }
    }

    /// The Content-Type webob sends with it (webob adds a charset to `text/*` only).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=UTF-8",
            Format::Json => "application/json",
            Format::Plain => "text/plain; charset=UTF-8",
        }
    }
}

/// The format webob picks for a request whose `Accept` fields have these values (several
/// fields are one list, as RFC 9110 §5.3 combines them; empty ones add nothing).
pub fn choose<'a>(accept: impl IntoIterator<Item = &'a [u8]>) -> Format {
    choose_among(accept, &[Format::Html, Format::Json])
}

/// The format webob's `acceptable_offers` ranks first among `offers` (in the caller's order
/// of preference) for these `Accept` fields; plain text when none is acceptable. An invalid
/// header makes every offer acceptable, so the first wins.
pub fn choose_among<'a>(accept: impl IntoIterator<Item = &'a [u8]>, offers: &[Format]) -> Format {
    let mut value = Vec::new();
    for field in accept.into_iter().filter(|field| !field.is_empty()) {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(field);
    }
    let Some(ranges) = parse_accept(&value) else {
        // An invalid header is disregarded: every offer is acceptable, the first wins.
        return offers.first().copied().unwrap_or(Format::Plain);
    };
    let mut best: Option<(Format, u16)> = None;
    for &format in offers {
        let (offer_type, offer_subtype) = format.media_type();
        // (quality, specificity) of the most specific range matching this offer; the first
        // of equally specific ranges counts.
        let mut matched: Option<(u16, u8)> = None;
        for range in &ranges {
            let specificity = if range.type_ == offer_type && range.subtype == offer_subtype {
                if range.has_params {
                    // `text/html;level=1` does not match the parameterless offer `text/html`.
                    continue;
                }
                3
            } else if range.subtype == "*" && range.type_ == offer_type {
                2
            } else if range.type_ == "*" && range.subtype == "*" {
                1
            } else {
                continue;
            };
            if matched.is_some_and(|(_, known)| specificity <= known) {
                continue;
            }
            matched = Some((range.quality, specificity));
        }
        if let Some((quality, _)) = matched.filter(|&(quality, _)| quality > 0) {
            // Strictly greater: on equal quality the earlier offer stays.
            if best.is_none_or(|(_, best_quality)| quality > best_quality) {
                best = Some((format, quality));
            }
        }
    }
    best.map_or(Format::Plain, |(format, _)| format)
}

/// One media range of an `Accept` header: type and subtype in lowercase, whether it has media
/// type parameters (before its weight), its quality in thousandths.
#[derive(Debug, PartialEq, Eq)]
struct MediaRange {
    type_: String,
    subtype: String,
    has_params: bool,
    quality: u16,
}

/// The media ranges of an `Accept` value, or `None` when it is not valid: the grammar of
/// webob's `Accept.accept_compiled_re` (RFC 7230's `#rule` list of RFC 7231 §5.3.2 elements),
/// parsed by hand. Every choice the regular expression could backtrack into leaves bytes that
/// cannot continue a list (a list element is only ever followed by optional whitespace and a
/// comma, or the end), so taking the longest element at each step accepts exactly what it
/// accepts. Bytes 0x80 to 0xFF are allowed only in quoted strings, as obs-text.
fn parse_accept(value: &[u8]) -> Option<Vec<MediaRange>> {
    let mut parser = Parser {
        bytes: value,
        at: 0,
    };
    let mut ranges = Vec::new();
    if value.is_empty() {
        return Some(ranges);
    }
    // #element => [ ( "," / element ) *( OWS "," [ OWS element ] ) ]
    if !parser.eat(b',') {
        ranges.push(parser.element()?);
    }
    while !parser.done() {
        parser.ows();
        if !parser.eat(b',') {
            return None;
        }
        let before = parser.at;
        parser.ows();
        match parser.attempt(Parser::element) {
            Some(range) => ranges.push(range),
            None => parser.at = before,
        }
    }
    Some(ranges)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    /// OWS: spaces and tabs.
    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Runs `step`; on failure puts the position back where it was.
    fn attempt<T>(&mut self, step: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let before = self.at;
        let result = step(self);
        if result.is_none() {
            self.at = before;
        }
        result
    }

    /// token = 1*tchar
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.bytes[start..self.at]).into())
    }

    /// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    fn quoted_string(&mut self) -> Option<()> {
        if !self.eat(b'"') {
            return None;
        }
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.at += 1,
                        _ => return None,
                    }
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => self.at += 1,
                _ => return None,
            }
        }
    }

    /// token / quoted-string
    fn word(&mut self) -> Option<()> {
        if self.peek() == Some(b'"') {
            self.quoted_string()
        } else {
            self.token().map(|_| ())
        }
    }

    /// OWS ";" OWS
    fn semicolon(&mut self) -> Option<()> {
        self.ows();
        self.eat(b';').then_some(())?;
        self.ows();
        Some(())
    }

    /// media-range [ weight *accept-ext ], where media-range = type "/" subtype
    /// *( OWS ";" OWS parameter ) and a parameter may not be named q.
    fn element(&mut self) -> Option<MediaRange> {
        let type_ = self.token()?.to_ascii_lowercase();
        if !self.eat(b'/') {
            return None;
        }
        let subtype = self.token()?.to_ascii_lowercase();
        let mut has_params = false;
        // parameter = token "=" ( token / quoted-string ), not "q=" (that is the weight).
        while self
            .attempt(|parser| {
                parser.semicolon()?;
                if matches!(parser.peek(), Some(b'q' | b'Q'))
                    && parser.bytes.get(parser.at + 1) == Some(&b'=')
                {
                    return None;
                }
                parser.token()?;
                parser.eat(b'=').then_some(())?;
                parser.word()
            })
            .is_some()
        {
            has_params = true;
        }
        let quality = match self.attempt(Parser::weight) {
            Some(quality) => {
                // accept-ext = OWS ";" OWS token [ "=" ( token / quoted-string ) ]
                while self
                    .attempt(|parser| {
                        parser.semicolon()?;
                        parser.token()?;
                        let after_name = parser.at;
                        if !(parser.eat(b'=') && parser.word().is_some()) {
                            parser.at = after_name;
                        }
                        Some(())
                    })
                    .is_some()
                {}
                quality
            }
            None => 1000,
        };
        Some(MediaRange {
            type_,
            subtype,
            has_params,
            quality,
        })
    }

    /// weight = OWS ";" OWS "q=" qvalue, where qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "."
    /// 0*3("0") ] ); the quality in thousandths.
    fn weight(&mut self) -> Option<u16> {
        self.semicolon()?;
        if !(self.eat(b'q') || self.eat(b'Q')) || !self.eat(b'=') {
            return None;
        }
        let whole = match self.peek()? {
            b'0' => 0,
            b'1' => 1,
            _ => return None,
        };
        self.at += 1;
        let mut thousandths = whole * 1000;
        if self.eat(b'.') {
            let mut scale = 100;
            for _ in 0..3 {
                match self.peek() {
                    Some(digit @ b'0'..=b'9') if whole == 0 || digit == b'0' => {
                        thousandths += u16::from(digit - b'0') * scale;
                        scale /= 10;
                        self.at += 1;
                    }
                    _ => break,
                }
            }
        }
        Some(thousandths)
    }
}

/// tchar (RFC 7230 §3.2.6).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// What goes into the body template: a `detail`-less webob exception.
#[derive(Clone, Copy, Debug)]
pub enum Fragment<'a> {
    /// The default template, with this explanation (what Glance passes as `explanation=`).
    Explanation(&'a str),
    /// `HTTPMethodNotAllowed`'s own template, which names the request's method.
    MethodNotAllowed { method: &'a str },
}

impl Fragment<'_> {
    /// The body template filled in, each substituted value passed through `escape` first.
    fn fill(self, escape: fn(&str) -> String) -> String {
        match self {
            // `${explanation}<br /><br />\n${detail}\n${html_comment}\n`, detail and comment
            // empty.
            Fragment::Explanation(explanation) => {
                format!("{}<br /><br />\n\n\n", escape(explanation))
            }
            // `The method ${REQUEST_METHOD} is not allowed for this resource. <br /><br />\n${detail}`
            Fragment::MethodNotAllowed { method } => format!(
                "The method {} is not allowed for this resource. <br /><br />\n",
                escape(method)
            ),
        }
    }
}

/// The body of an error in `format`: `status` is webob's status text (`404 Not Found`), `title`
/// its title (`Not Found`).
pub fn render(format: Format, status: &str, title: &str, fragment: Fragment<'_>) -> String {
    match format {
        Format::Html => format!(
            "<html>\n <head>\n  <title>{status}</title>\n </head>\n <body>\n  <h1>{status}</h1>\n  \
             {}\n </body>\n</html>",
            fragment.fill(html_escape)
        ),
        Format::Json => format!(
            "{{\"message\": {}, \"code\": {}, \"title\": {}}}",
            python_json_string(&fragment.fill(str::to_string)),
            python_json_string(status),
            python_json_string(title)
        ),
        Format::Plain => format!("{status}\n\n{}", strip_tags(&fragment.fill(str::to_string))),
    }
}

/// webob's `html_escape`: Python's `html.escape(s, quote=True)`, then every non-ASCII character
/// as a decimal character reference.
fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c if c.is_ascii() => escaped.push(c),
            c => escaped.push_str(&format!("&#{};", u32::from(c))),
        }
    }
    escaped
}

/// webob's `strip_tags`, in its order: line breaks become spaces, carriage returns go, each
/// `<br...>` becomes a line break, comment markers go, then every other `<...>`.
fn strip_tags(text: &str) -> String {
    let text = text.replace('\n', " ").replace('\r', "");
    let text = replace_tags(&text, true);
    let text = text.replace("<!--", "").replace("-->", "");
    replace_tags(&text, false)
}

/// Replaces each shortest `<...>` (`<br...>`, case-insensitive, with `only_br`) from left to
/// right: by a line break for `<br...>`, by nothing otherwise. A `<` with no `>` after it stays.
fn replace_tags(text: &str, only_br: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let candidate = &rest[start..];
        let is_br = candidate
            .get(1..3)
            .is_some_and(|name| name.eq_ignore_ascii_case("br"));
        let end = if only_br && !is_br {
            None
        } else {
            // `<br.*?>` needs its `>` after the `br`; `<.*?>` anywhere after the `<`.
            let from = if only_br { 3 } else { 1 };
            candidate[from..].find('>').map(|end| from + end)
        };
        match end {
            Some(end) => {
                out.push_str(&rest[..start]);
                if only_br {
                    out.push('\n');
                }
                rest = &candidate[end + 1..];
            }
            // No `>` anywhere after this `<`: no later `<` can find one either, so the rest
            // stays as it is. (Going on `<` by `<` would rescan the rest each time: quadratic in
            // a client's text, which error messages may quote.)
            None if !only_br || is_br => break,
            None => {
                out.push_str(&rest[..=start]);
                rest = &candidate[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A string as Python's `json.dumps` writes it by default (`ensure_ascii`): `"` and `\` escaped,
/// `\n \r \t \b \f` by name, every other character outside space to `~` as `\uxxxx` (lowercase
/// hex, UTF-16 surrogate pairs above U+FFFF).
fn python_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripping_tags_is_linear_in_a_text_of_unclosed_angle_brackets() {
        // 1 MiB of `<` (and of `<br`) with no `>`: webob keeps it as it is. Going `<` by `<`
        // and rescanning the rest would take on the order of 10^12 steps here.
        for unit in ["<", "<br"] {
            let text = unit.repeat(1024 * 1024 / unit.len());
            assert_eq!(strip_tags(&text), text);
        }
        assert_eq!(strip_tags("a<b<c>d<e"), "ad<e");
        assert_eq!(strip_tags("x<br/>y<br"), "x\ny<br");
    }

    /// `Accept` values and webob 1.8.9's choice for each, as `HTTPNotFound().get_response()`
    /// made it (its Content-Type): no header, the clients' values, quality values, wildcards
    /// and their specificity, media type parameters, invalid headers (ignored: HTML).
    const NEGOTIATION: &[(Option<&[u8]>, Format)] = &[
        (None, Format::Plain),
        (Some(b""), Format::Plain),
        (Some(b"*/*"), Format::Html),
        (Some(b"application/json, text/plain, */*"), Format::Html),
        (Some(b"application/json"), Format::Json),
        (Some(b"text/plain"), Format::Plain),
        (Some(b"text/html"), Format::Html),
        (Some(b"application/json;q=0"), Format::Plain),
        (Some(b"*/*;q=0"), Format::Plain),
        (Some(b"text/html;q=0, */*"), Format::Json),
        (Some(b"application/json;q=0.9, */*;q=0.8"), Format::Json),
        (Some(b"application/json, text/html;q=0.999"), Format::Json),
        (Some(b"text/*"), Format::Html),
        (Some(b"application/*"), Format::Json),
        (Some(b"text/*, application/json"), Format::Html),
        (Some(b"text/html;level=1"), Format::Plain),
        (Some(b"application/json; charset=utf-8"), Format::Plain),
        (
            Some(b"application/json; charset=utf-8, text/plain"),
            Format::Plain,
        ),
        (
            Some(b"text/html;level=1, application/json;q=0.5"),
            Format::Json,
        ),
        (Some(b"TEXT/HTML"), Format::Html),
        (Some(b"Application/JSON"), Format::Json),
        (Some(b"text/html;q=0, text/html"), Format::Plain),
        (Some(b"*/*;q=0.5, application/json"), Format::Json),
        (
            Some(b"application/json;q=0.5, text/html;q=0.5"),
            Format::Html,
        ),
        (Some(b"json"), Format::Html),
        (Some(b"application/json;q=2"), Format::Html),
        (Some(b"application/json;q=1.5"), Format::Html),
        (Some(b"application/json;q=0.1234"), Format::Html),
        (Some(b"application/json;q=1.000"), Format::Json),
        (Some(b"application/json;q=0."), Format::Plain),
        (Some(b"application/json ;q=0.5"), Format::Json),
        (
            Some(b"application/json ; Q=0.5 ; ext ; ext2=\"x, y\""),
            Format::Json,
        ),
        (Some(b", application/json"), Format::Html),
        (Some(b"application/json,,"), Format::Json),
        (Some(b"application/json, "), Format::Html),
        (Some(b"application/json , text/plain"), Format::Json),
        (Some(b"application/json;charset=\"utf-8\""), Format::Plain),
        (Some(b"text/html;q=0.5;level"), Format::Html),
        (Some(b"application/json;level"), Format::Html),
        (Some(b"*/*;foo=bar"), Format::Html),
        (Some(b"text/*;q=0, application/json;q=0.1"), Format::Json),
        (Some(b"image/png"), Format::Plain),
        (Some(b"text/plain;q=1, application/xml"), Format::Plain),
        (Some(b"application/json;a=\"\xe9\""), Format::Plain),
        (Some(b"application/json\xe9"), Format::Html),
        (Some(b"application/json;q=0, */*"), Format::Html),
        (
            Some(b"text/html;q=0, application/*;q=0.2, */*;q=0.1"),
            Format::Json,
        ),
        (Some(b"*/html"), Format::Plain),
        (
            Some(b"text/html;q=0.001, application/json;q=0"),
            Format::Html,
        ),
        (Some(b"application/json;q=0.5;q=1"), Format::Json),
        (Some(b"application/json;x=\"a\\\"b\""), Format::Plain),
        (Some(b"application/json;x=\"unterminated"), Format::Html),
        (
            Some(b"application/json;q=0.5, text/html;level=1;q=1, text/*;q=0.4"),
            Format::Json,
        ),
        (
            Some(b"text/html;Level=1;q=0.2, text/html;q=0.1"),
            Format::Html,
        ),
        (Some(b"application/json\t,\ttext/html;q=0.5"), Format::Json),
        (Some(b"a/b;q=0.5 , */*;q=0"), Format::Plain),
    ];

    #[test]
    fn the_format_is_webobs_choice_for_every_accept_value() {
        for &(accept, expected) in NEGOTIATION {
            let shown = accept.map(String::from_utf8_lossy);
            assert_eq!(choose(accept), expected, "Accept: {shown:?}");
        }
    }

    #[test]
    fn the_clients_values_get_what_they_get_from_glance() {
        // requests' default (glanceclient) and browsers' JSON clients: HTML, as from Glance.
        assert_eq!(choose([&b"*/*"[..]]), Format::Html);
        assert_eq!(
            choose([&b"application/json, text/plain, */*"[..]]),
            Format::Html
        );
        // keystoneauth's default (openstacksdk): JSON.
        assert_eq!(choose([&b"application/json"[..]]), Format::Json);
        // No Accept, and openstacksdk's `Accept: ` on uploads: plain text.
        assert_eq!(choose(None::<&[u8]>), Format::Plain);
        assert_eq!(choose([&b""[..]]), Format::Plain);
        assert_eq!(choose([&b"text/plain"[..]]), Format::Plain);
        // Quality 0 refuses an offer, even when a wildcard would accept it.
        assert_eq!(choose([&b"application/json;q=0"[..]]), Format::Plain);
        assert_eq!(choose([&b"*/*;q=0"[..]]), Format::Plain);
        assert_eq!(choose([&b"text/html;q=0, */*"[..]]), Format::Json);
    }

    #[test]
    fn several_accept_fields_are_one_list() {
        assert_eq!(
            choose([&b"text/plain"[..], b"application/json"]),
            Format::Json
        );
        assert_eq!(choose([&b"application/json"[..], b""]), Format::Json);
        assert_eq!(
            choose([&b"application/json;q=0.5"[..], b"text/*"]),
            Format::Html
        );
    }

    /// Every byte string up to four bytes long from an alphabet of the grammar's delimiters
    /// never panics (the negotiation reads bytes a client chose).
    #[test]
    fn no_accept_value_panics() {
        let alphabet = b"a/*;q=0.1,\" \t\\\xe9";
        let mut value = Vec::new();
        fn walk(value: &mut Vec<u8>, alphabet: &[u8], depth: usize) {
            let _ = choose([value.as_slice()]);
            if depth == 0 {
                return;
            }
            for &byte in alphabet {
                value.push(byte);
                walk(value, alphabet, depth - 1);
                value.pop();
            }
        }
        walk(&mut value, alphabet, 4);
    }

    /// A message with every kind of character the templates treat specially.
    const AWKWARD: &str = "a <b>tag</b> & \"quotes\" 's\u{e9}\u{2603}\u{1f600} <BR/>line\r\nnext\u{1}\u{7f} <!-- c --> a < b";

    /// Bodies as webob 1.8.9 wrote them for `HTTPNotFound(explanation=...)` and the others
    /// (`HTTPMethodNotAllowed()` for a POST), byte for byte.
    #[test]
    fn bodies_are_webobs_byte_for_byte() {
        let cases: &[(Format, &str, &str, Fragment<'_>, &str)] = &[
            (
                Format::Html,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation("No image found with ID x"),
                "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  No image found with ID x<br /><br />\n\n\n\n </body>\n</html>",
            ),
            (
                Format::Html,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation(AWKWARD),
                "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  a &lt;b&gt;tag&lt;/b&gt; &amp; &quot;quotes&quot; &#x27;s&#233;&#9731;&#128512; &lt;BR/&gt;line\r\nnext\u{1}\u{7f} &lt;!-- c --&gt; a &lt; b<br /><br />\n\n\n\n </body>\n</html>",
            ),
            (
                Format::Html,
                "413 Request Entity Too Large",
                "Request Entity Too Large",
                Fragment::Explanation("too big"),
                "<html>\n <head>\n  <title>413 Request Entity Too Large</title>\n </head>\n <body>\n  <h1>413 Request Entity Too Large</h1>\n  too big<br /><br />\n\n\n\n </body>\n</html>",
            ),
            (
                Format::Html,
                "416 Request Range Not Satisfiable",
                "Request Range Not Satisfiable",
                Fragment::Explanation("no range"),
                "<html>\n <head>\n  <title>416 Request Range Not Satisfiable</title>\n </head>\n <body>\n  <h1>416 Request Range Not Satisfiable</h1>\n  no range<br /><br />\n\n\n\n </body>\n</html>",
            ),
            (
                Format::Html,
                "405 Method Not Allowed",
                "Method Not Allowed",
                Fragment::MethodNotAllowed { method: "POST" },
                "<html>\n <head>\n  <title>405 Method Not Allowed</title>\n </head>\n <body>\n  <h1>405 Method Not Allowed</h1>\n  The method POST is not allowed for this resource. <br /><br />\n\n </body>\n</html>",
            ),
            (
                Format::Json,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation("No image found with ID x"),
                "{\"message\": \"No image found with ID x<br /><br />\\n\\n\\n\", \"code\": \"404 Not Found\", \"title\": \"Not Found\"}",
            ),
            (
                Format::Json,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation(AWKWARD),
                "{\"message\": \"a <b>tag</b> & \\\"quotes\\\" 's\\u00e9\\u2603\\ud83d\\ude00 <BR/>line\\r\\nnext\\u0001\\u007f <!-- c --> a < b<br /><br />\\n\\n\\n\", \"code\": \"404 Not Found\", \"title\": \"Not Found\"}",
            ),
            (
                Format::Json,
                "413 Request Entity Too Large",
                "Request Entity Too Large",
                Fragment::Explanation("too big"),
                "{\"message\": \"too big<br /><br />\\n\\n\\n\", \"code\": \"413 Request Entity Too Large\", \"title\": \"Request Entity Too Large\"}",
            ),
            (
                Format::Json,
                "416 Request Range Not Satisfiable",
                "Request Range Not Satisfiable",
                Fragment::Explanation("no range"),
                "{\"message\": \"no range<br /><br />\\n\\n\\n\", \"code\": \"416 Request Range Not Satisfiable\", \"title\": \"Request Range Not Satisfiable\"}",
            ),
            (
                Format::Json,
                "405 Method Not Allowed",
                "Method Not Allowed",
                Fragment::MethodNotAllowed { method: "POST" },
                "{\"message\": \"The method POST is not allowed for this resource. <br /><br />\\n\", \"code\": \"405 Method Not Allowed\", \"title\": \"Method Not Allowed\"}",
            ),
            (
                Format::Plain,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation("No image found with ID x"),
                "404 Not Found\n\nNo image found with ID x\n\n   ",
            ),
            (
                Format::Plain,
                "404 Not Found",
                "Not Found",
                Fragment::Explanation(AWKWARD),
                "404 Not Found\n\na tag & \"quotes\" 's\u{e9}\u{2603}\u{1f600} \nline next\u{1}\u{7f}  c  a < b\n\n   ",
            ),
            (
                Format::Plain,
                "413 Request Entity Too Large",
                "Request Entity Too Large",
                Fragment::Explanation("too big"),
                "413 Request Entity Too Large\n\ntoo big\n\n   ",
            ),
            (
                Format::Plain,
                "416 Request Range Not Satisfiable",
                "Request Range Not Satisfiable",
                Fragment::Explanation("no range"),
                "416 Request Range Not Satisfiable\n\nno range\n\n   ",
            ),
            (
                Format::Plain,
                "405 Method Not Allowed",
                "Method Not Allowed",
                Fragment::MethodNotAllowed { method: "POST" },
                "405 Method Not Allowed\n\nThe method POST is not allowed for this resource. \n\n ",
            ),
        ];
        for (format, status, title, fragment, expected) in cases {
            assert_eq!(
                render(*format, status, title, *fragment),
                *expected,
                "{format:?} {status} {fragment:?}"
            );
        }
    }
}
