//! A small JSON reader that keeps the line of every value, so a bad setting in a pm2 file is
//! named with its line.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written, and its value.
    Number(String, f64),
    Text(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub json: Json,
    pub line: usize,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.json {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// How a message names this kind of value.
    pub fn kind(&self) -> String {
        match &self.json {
            Json::Null => "null".into(),
            Json::Bool(b) => format!("{b}"),
            Json::Number(raw, _) => format!("the number {raw}"),
            Json::Text(t) => format!("the string {t:?}"),
            Json::Array(_) => "an array".into(),
            Json::Object(_) => "an object".into(),
        }
    }
}

/// The document, or the line and problem of the first error.
pub fn parse(text: &str) -> Result<Node, (usize, String)> {
    let mut reader = Reader { bytes: text.as_bytes(), at: 0, line: 1 };
    let node = reader.value(0)?;
    reader.blank();
    if reader.at < reader.bytes.len() {
        return Err(reader.fail("more text after the JSON document"));
    }
    Ok(node)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
}

impl Reader<'_> {
    fn fail(&self, problem: &str) -> (usize, String) {
        (self.line, format!("invalid JSON: {problem}"))
    }

    fn blank(&mut self) {
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), (usize, String)> {
        self.blank();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.fail(&format!("expected `{}`", byte as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, (usize, String)> {
        if depth > 64 {
            return Err(self.fail("nested too deeply"));
        }
        self.blank();
        let line = self.line;
        let json = match self.peek() {
            None => return Err(self.fail("unexpected end of the file")),
            Some(b'{') => {
                self.at += 1;
                let mut members = vec![];
                self.blank();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                } else {
                    loop {
                        self.blank();
                        if self.peek() != Some(b'"') {
                            return Err(self.fail("expected a key in double quotes"));
                        }
                        let key = self.string()?;
                        self.expect(b':')?;
                        let value = self.value(depth + 1)?;
                        members.push((key, value));
                        self.blank();
                        match self.peek() {
                            Some(b',') => self.at += 1,
                            Some(b'}') => {
                                self.at += 1;
                                break;
                            }
                            _ => return Err(self.fail("expected `,` or `}`")),
                        }
                    }
                }
                Json::Object(members)
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = vec![];
                self.blank();
                if self.peek() == Some(b']') {
                    self.at += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.blank();
                        match self.peek() {
                            Some(b',') => self.at += 1,
                            Some(b']') => {
                                self.at += 1;
                                break;
                            }
                            _ => return Err(self.fail("expected `,` or `]`")),
                        }
                    }
                }
                Json::Array(items)
            }
            Some(b'"') => Json::Text(self.string()?),
            Some(b't') if self.bytes[self.at..].starts_with(b"true") => {
                self.at += 4;
                Json::Bool(true)
            }
            Some(b'f') if self.bytes[self.at..].starts_with(b"false") => {
                self.at += 5;
                Json::Bool(false)
            }
            Some(b'n') if self.bytes[self.at..].starts_with(b"null") => {
                self.at += 4;
                Json::Null
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self.peek().is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
                    self.at += 1;
                }
                let raw = std::str::from_utf8(&self.bytes[start..self.at]).expect("ASCII");
                let number = raw.parse::<f64>().map_err(|_| self.fail(&format!("`{raw}` is not a number")))?;
                Json::Number(raw.to_string(), number)
            }
            Some(_) => return Err(self.fail("expected a value")),
        };
        Ok(Node { json, line })
    }

    fn string(&mut self) -> Result<String, (usize, String)> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while self.peek().is_some_and(|b| b != b'"' && b != b'\\' && b >= 0x20) {
                self.at += 1;
            }
            out.push_str(std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| self.fail("not UTF-8"))?);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = self.peek().ok_or_else(|| self.fail("a string is not closed"))?;
                    self.at += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) && self.bytes[self.at..].starts_with(b"\\u") {
                                self.at += 2;
                                let low = self.hex4()?;
                                code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.fail("a bad escape in a string")),
                    }
                }
                None => return Err(self.fail("a string is not closed")),
                Some(_) => return Err(self.fail("a control character in a string (write \\n for a new line)")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, (usize, String)> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or_else(|| self.fail("a bad \\u escape"))?;
        let code = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.fail("a bad \\u escape"))?;
        self.at += 4;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_lines() {
        let node = parse(
            "{\n  \"apps\": [\n    {\"name\": \"a\\u00e9\\n\", \"n\": -1.5e2},\n    true\n  ],\n  \"x\": null\n}\n",
        )
        .unwrap();
        assert_eq!(node.line, 1);
        let apps = node.get("apps").unwrap();
        assert_eq!(apps.line, 2);
        let Json::Array(items) = &apps.json else { panic!("an array") };
        assert_eq!(items[0].line, 3);
        assert_eq!(items[0].get("name").unwrap().json, Json::Text("a\u{e9}\n".into()));
        assert_eq!(items[0].get("n").unwrap().json, Json::Number("-1.5e2".into(), -150.0));
        assert_eq!(items[1], Node { json: Json::Bool(true), line: 4 });
        assert_eq!(node.get("x").unwrap().json, Json::Null);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("{\n\"a\": 1,\n}", 3, "expected a key"),
            ("{\"a\" 1}", 1, "expected `:`"),
            ("[1,\n2\n", 3, "expected `,` or `]`"),
            ("{\"a\": \"b\n\"}", 1, "control character"),
            ("{} {}", 1, "more text"),
            ("", 1, "unexpected end"),
            ("{\"a\": tru}", 1, "expected a value"),
        ];
        for (text, line, want) in cases {
            let (got_line, problem) = parse(text).expect_err(text);
            assert_eq!(got_line, *line, "{text}: {problem}");
            assert!(problem.contains(want), "{text}: {problem}");
        }
    }
}
