//! A small YAML reader, enough for etcd's configuration file.
//!
//! Owns turning text into a tree of mappings, sequences and scalars, with
//! line numbers kept for error messages. Supported: block mappings (nested by
//! indentation), block sequences (`- item`), flow sequences and mappings
//! (`[a, b]`, `{k: v}`, one level, possibly over several lines), plain,
//! single- and double-quoted scalars, comments, `~`/`null`/empty as null, and
//! a leading `---`. Anything else (anchors, tags, block scalars, several
//! documents) is refused with its line number rather than misread. Knows
//! nothing about etcd's keys.

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    /// `~`, `null` or nothing.
    Null,
    /// A scalar's text, unquoted and unescaped.
    Scalar(String),
    /// A sequence; each item with its line.
    Seq(Vec<(usize, Node)>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// One `key: value` pair.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Node,
}

/// A YAML syntax error at a line (1-based).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct YamlError {
    pub line: usize,
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, YamlError> {
    Err(YamlError { line, msg: msg.into() })
}

/// A non-blank line with its comment removed.
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

/// Parses a whole file, which must be a mapping (or empty).
pub(super) fn parse(text: &str) -> Result<Vec<Entry>, YamlError> {
    let lines = split_lines(text)?;
    let mut pos = 0;
    let entries = match lines.first() {
        Some(first) => parse_map(&lines, &mut pos, first.indent)?,
        None => Vec::new(),
    };
    if let Some(line) = lines.get(pos) {
        return err(line.number, "unexpected indentation");
    }
    Ok(entries)
}

fn split_lines(text: &str) -> Result<Vec<Line>, YamlError> {
    let mut lines = Vec::new();
    let mut seen_content = false;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let rest = &raw[indent..];
        if rest.starts_with('\t') {
            return err(number, "tabs are not allowed in indentation");
        }
        let content = strip_comment(rest).trim_end().to_string();
        if content.is_empty() {
            continue;
        }
        if indent == 0 && (content == "---" || content.starts_with("--- ")) {
            if seen_content {
                return err(number, "several YAML documents in one file are not supported");
            }
            continue;
        }
        if indent == 0 && content == "..." {
            break;
        }
        if content.starts_with('%') {
            return err(number, "YAML directives are not supported");
        }
        seen_content = true;
        lines.push(Line { number, indent, text: content });
    }
    Ok(lines)
}

/// Drops a `#` comment that is outside quotes and starts the text or follows
/// a blank.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_blank = true;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev_blank => return &s[..i],
            None if (c == '"' || c == '\'') && prev_blank_or_flow(s, i) => quote = Some(c),
            None => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    s
}

/// A quote opens a quoted scalar only where a scalar can start.
fn prev_blank_or_flow(s: &str, i: usize) -> bool {
    match s[..i].chars().next_back() {
        None => true,
        Some(c) => matches!(c, ' ' | '\t' | '[' | '{' | ',' | ':' | '-'),
    }
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn parse_map(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Vec<Entry>, YamlError> {
    let mut entries: Vec<Entry> = Vec::new();
    while let Some(line) = lines.get(*pos) {
        if line.indent < indent {
            break;
        }
        if line.indent > indent {
            return err(line.number, "unexpected indentation");
        }
        if is_seq_item(&line.text) {
            return err(line.number, "expected \"key: value\", found a sequence item");
        }
        let Some((key, rest)) = split_key(&line.text) else {
            return err(line.number, "expected \"key: value\"");
        };
        let key = unquote_key(key, line.number)?;
        if let Some(prev) = entries.iter().find(|e| e.key == key) {
            return err(line.number, format!("key {key:?} is already defined at line {}", prev.line));
        }
        *pos += 1;
        let value = if rest.is_empty() {
            match lines.get(*pos) {
                Some(next) if next.indent > indent => {
                    if is_seq_item(&next.text) {
                        parse_seq(lines, pos, next.indent)?
                    } else {
                        Node::Map(parse_map(lines, pos, next.indent)?)
                    }
                }
                Some(next) if next.indent == indent && is_seq_item(&next.text) => parse_seq(lines, pos, indent)?,
                _ => Node::Null,
            }
        } else {
            parse_inline(rest, line.number, lines, pos)?
        };
        entries.push(Entry { key, line: line.number, value });
    }
    Ok(entries)
}

fn parse_seq(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Node, YamlError> {
    let mut items = Vec::new();
    while let Some(line) = lines.get(*pos) {
        if line.indent != indent || !is_seq_item(&line.text) {
            break;
        }
        let rest = line.text[1..].trim_start();
        *pos += 1;
        let value = if rest.is_empty() {
            match lines.get(*pos) {
                Some(next) if next.indent > indent => {
                    return err(next.number, "nested blocks inside a sequence are not supported");
                }
                _ => Node::Null,
            }
        } else if split_key(rest).is_some() && !rest.starts_with(['"', '\'', '[', '{']) {
            return err(line.number, "mappings inside a sequence are not supported");
        } else {
            parse_inline(rest, line.number, lines, pos)?
        };
        items.push((line.number, value));
    }
    Ok(Node::Seq(items))
}

/// Splits `key: rest` at the first `:` that is followed by a blank or ends
/// the line, outside quotes.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if i == 0 && (c == '"' || c == '\'') => quote = Some(c),
            None if c == ':' => {
                let after = &text[i + 1..];
                if after.is_empty() || after.starts_with(' ') {
                    return Some((text[..i].trim_end(), after.trim()));
                }
            }
            None => {}
        }
    }
    None
}

fn unquote_key(key: &str, line: usize) -> Result<String, YamlError> {
    match parse_scalar(key, line)? {
        Node::Scalar(s) => Ok(s),
        _ => err(line, "a key must be a plain or quoted string"),
    }
}

/// A value on the same line as its key or dash; a flow collection may go
/// on over the following lines.
fn parse_inline(rest: &str, number: usize, lines: &[Line], pos: &mut usize) -> Result<Node, YamlError> {
    match rest.chars().next() {
        Some('[') | Some('{') => {
            let mut text = rest.to_string();
            while !flow_closed(&text) {
                let Some(next) = lines.get(*pos) else {
                    return err(number, "unclosed flow collection ('[' or '{')");
                };
                text.push(' ');
                text.push_str(&next.text);
                *pos += 1;
            }
            parse_flow(&text, number)
        }
        Some('|') | Some('>') => err(number, "block scalars ('|' and '>') are not supported"),
        Some('&') | Some('*') | Some('!') => err(number, "anchors, aliases and tags are not supported"),
        _ => parse_scalar(rest, number),
    }
}

/// Whether brackets outside quotes balance.
fn flow_closed(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth <= 0 && quote.is_none()
}

fn parse_flow(text: &str, line: usize) -> Result<Node, YamlError> {
    let is_map = text.starts_with('{');
    let close = if is_map { '}' } else { ']' };
    let Some(inner) = text[1..].trim_end().strip_suffix(close) else {
        return err(line, format!("expected '{close}' at the end of the flow collection"));
    };
    let parts = split_flow_items(inner, line)?;
    if is_map {
        let mut entries: Vec<Entry> = Vec::new();
        for part in parts {
            let Some((k, v)) = split_key(&part) else {
                return err(line, format!("expected \"key: value\" in flow mapping, found {part:?}"));
            };
            let key = unquote_key(k, line)?;
            let value = if v.is_empty() { Node::Null } else { parse_scalar(v, line)? };
            entries.push(Entry { key, line, value });
        }
        Ok(Node::Map(entries))
    } else {
        let mut items = Vec::new();
        for part in parts {
            items.push((line, parse_scalar(&part, line)?));
        }
        Ok(Node::Seq(items))
    }
}

/// Splits flow items at commas outside quotes; refuses nested collections.
fn split_flow_items(inner: &str, line: usize) -> Result<Vec<String>, YamlError> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => return err(line, "nested flow collections are not supported"),
                ',' => {
                    items.push(current.trim().to_string());
                    current.clear();
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    items.push(current.trim().to_string());
    // "[a, b,]" and "[]" have an empty last item that is not a value.
    if items.last().is_some_and(String::is_empty) {
        items.pop();
    }
    if items.iter().any(String::is_empty) {
        return err(line, "empty item in flow collection");
    }
    Ok(items)
}

/// A plain or quoted scalar that makes up the whole of `text`.
fn parse_scalar(text: &str, line: usize) -> Result<Node, YamlError> {
    let text = text.trim();
    if let Some(body) = text.strip_prefix('\'') {
        let Some(body) = body.strip_suffix('\'') else {
            return err(line, "unterminated single-quoted string");
        };
        if body.replace("''", "").contains('\'') {
            return err(line, "text after the end of a single-quoted string");
        }
        return Ok(Node::Scalar(body.replace("''", "'")));
    }
    if let Some(body) = text.strip_prefix('"') {
        return unescape_double(body, line).map(Node::Scalar);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Ok(Node::Null),
        _ => Ok(Node::Scalar(text.to_string())),
    }
}

/// The body of a double-quoted string (after the opening quote), unescaped.
fn unescape_double(body: &str, line: usize) -> Result<String, YamlError> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if chars.as_str().trim().is_empty() {
                    return Ok(out);
                }
                return err(line, "text after the end of a double-quoted string");
            }
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('0') => '\0',
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some(' ') => ' ',
                    Some(kind @ ('x' | 'u' | 'U')) => {
                        let width = match kind {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(width).collect();
                        let code = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == width);
                        match code.and_then(char::from_u32) {
                            Some(ch) => ch,
                            None => return err(line, format!("bad escape \\{kind}{hex}")),
                        }
                    }
                    Some(other) => return err(line, format!("unknown escape \\{other}")),
                    None => return err(line, "unterminated double-quoted string"),
                };
                out.push(escaped);
            }
            c => out.push(c),
        }
    }
    err(line, "unterminated double-quoted string")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Node {
        Node::Scalar(v.to_string())
    }

    fn get<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Node> {
        entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    #[test]
    fn reads_etcds_sample_shapes() {
        let text = "\
# comment
---
name: 'default'
data-dir:
snapshot-count: 10000   # trailing comment
initial-cluster-token: \"etcd-#cluster\"
listen-peer-urls: http://localhost:2380
client-transport-security:
  # nested comment
  cert-file:
  client-cert-auth: false
log-outputs: [stderr]
cipher-suites: [
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
]
cors:
- http://a
- 'http://b'
socket-options: {reuse-port: true, reuse-address: false}
it's: fine
";
        let e = parse(text).unwrap_or_default();
        assert_eq!(get(&e, "name"), Some(&s("default")));
        assert_eq!(get(&e, "data-dir"), Some(&Node::Null));
        assert_eq!(get(&e, "snapshot-count"), Some(&s("10000")));
        assert_eq!(get(&e, "initial-cluster-token"), Some(&s("etcd-#cluster")));
        assert_eq!(get(&e, "listen-peer-urls"), Some(&s("http://localhost:2380")));
        let Some(Node::Map(tls)) = get(&e, "client-transport-security") else {
            panic!("no nested map: {e:?}");
        };
        assert_eq!(get(tls, "cert-file"), Some(&Node::Null));
        assert_eq!(get(tls, "client-cert-auth"), Some(&s("false")));
        assert_eq!(tls[1].line, 11);
        assert_eq!(get(&e, "log-outputs"), Some(&Node::Seq(vec![(12, s("stderr"))])));
        let Some(Node::Seq(suites)) = get(&e, "cipher-suites") else {
            panic!("no suites");
        };
        assert_eq!(suites.len(), 2);
        assert_eq!(get(&e, "cors"), Some(&Node::Seq(vec![(18, s("http://a")), (19, s("http://b"))])));
        let Some(Node::Map(sock)) = get(&e, "socket-options") else {
            panic!("no flow map");
        };
        assert_eq!(get(sock, "reuse-port"), Some(&s("true")));
        assert_eq!(get(&e, "it's"), Some(&s("fine")));
    }

    #[test]
    fn quoting_and_escapes() {
        let e = parse("a: 'it''s'\nb: \"x\\ty\\u00e9\"\nc: ''\nd: ~\ne: a: b\n").unwrap_or_default();
        assert_eq!(get(&e, "a"), Some(&s("it's")));
        assert_eq!(get(&e, "b"), Some(&s("x\tyé")));
        assert_eq!(get(&e, "c"), Some(&s("")));
        assert_eq!(get(&e, "d"), Some(&Node::Null));
        assert_eq!(get(&e, "e"), Some(&s("a: b")));
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("# only a comment\n"), Ok(vec![]));
    }

    #[test]
    fn refuses_what_it_does_not_understand_with_the_line() {
        let e = |t: &str| parse(t).err().map(|e| (e.line, e.msg));
        assert_eq!(e("a: 1\na: 2\n"), Some((2, "key \"a\" is already defined at line 1".into())));
        assert_eq!(e("a: 1\n  b: 2\n"), Some((2, "unexpected indentation".into())));
        assert_eq!(e("a: |\n  x\n"), Some((1, "block scalars ('|' and '>') are not supported".into())));
        assert_eq!(e("a: &x 1\n"), Some((1, "anchors, aliases and tags are not supported".into())));
        assert_eq!(e("a: [1, 2\n"), Some((1, "unclosed flow collection ('[' or '{')".into())));
        assert_eq!(e("a: \"x\n"), Some((1, "unterminated double-quoted string".into())));
        assert_eq!(e("just text\n"), Some((1, "expected \"key: value\"".into())));
        assert_eq!(e("\ta: 1\n"), Some((1, "tabs are not allowed in indentation".into())));
        assert_eq!(e("a: 1\n---\nb: 2\n").map(|x| x.0), Some(2));
        assert_eq!(e("a: [[1]]\n").map(|x| x.0), Some(1));
    }
}
