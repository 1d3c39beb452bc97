//! Words as Python's `shlex` splits them: supervisord splits `command` in POSIX mode and
//! `environment` in its older non-POSIX mode, and the import must read both the same way.

/// `shlex.split(text)`: POSIX quoting, backslash escapes, no comments.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut word = String::new();
    // A word has begun (so `""` is an empty word, not nothing).
    let mut started = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\\' => {
                word.push(chars.next().ok_or("a backslash at the end, with nothing to escape")?);
                started = true;
            }
            '\'' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a ' quote is not closed".into()),
                    }
                }
            }
            '"' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash escapes only `"` and itself.
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a \" quote is not closed".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a \" quote is not closed".into()),
                    }
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

/// The tokens of `shlex.shlex(text)` in its default non-POSIX mode with supervisord's extra
/// word characters `/.+-():`: words, quoted strings (quotes kept), `#` comments to the end of
/// the line, and every other character a token of its own.
pub fn tokens(text: &str) -> Result<Vec<String>, String> {
    fn word_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || "_/.+-():".contains(c)
    }
    let mut tokens = vec![];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' | '"' => {
                let mut token = c.to_string();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(other) => token.push(other),
                        None => return Err(format!("a {c} quote is not closed")),
                    }
                }
                token.push(c);
                tokens.push(token);
            }
            c if word_char(c) => {
                let mut token = c.to_string();
                while let Some(&next) = chars.peek() {
                    // In this mode a quote inside a word is part of it.
                    if word_char(next) || next == '\'' || next == '"' {
                        token.push(next);
                        chars.next();
                    } else if next == '#' {
                        while chars.next().is_some_and(|c| c != '\n') {}
                    } else {
                        break;
                    }
                }
                tokens.push(token);
            }
            c => tokens.push(c.to_string()),
        }
    }
    Ok(tokens)
}

/// Variables in order, as `KEY=value` pairs.
pub type Pairs = Vec<(String, String)>;

/// supervisord's `KEY=val,KEY2="v, 2"`: the pairs, and the tokens it skips without a word
/// where a comma belongs (supervisord drops them too; the import says so).
pub fn pairs(text: &str) -> Result<(Pairs, Vec<String>), String> {
    let tokens = tokens(text)?;
    let mut pairs = vec![];
    let mut skipped = vec![];
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i..tokens.len().min(i + 3)] {
            [key, eq, value] if eq == "=" => {
                let strip = |c: char| c == '\'' || c == '"';
                pairs.push((key.trim_matches(strip).to_string(), value.trim_matches(strip).to_string()));
            }
            _ => {
                return Err(format!("expected KEY=VALUE pairs separated by commas, found `{}`", tokens[i..].join(" ")));
            }
        }
        if let Some(separator) = tokens.get(i + 3).filter(|t| *t != ",") {
            skipped.push(separator.clone());
        }
        i += 4;
    }
    Ok((pairs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_posix_quoting_like_shlex() {
        let cases: &[(&str, &[&str])] = &[
            ("php artisan queue:work --sleep=3", &["php", "artisan", "queue:work", "--sleep=3"]),
            ("  a   b\t c ", &["a", "b", "c"]),
            ("sh -c 'echo \"$HOME\"; sleep 1'", &["sh", "-c", "echo \"$HOME\"; sleep 1"]),
            (r#"a "b c" d"#, &["a", "b c", "d"]),
            (r#"a "x\"y\\z\n""#, &["a", r#"x"y\z\n"#]),
            (r"a\ b c", &["a b", "c"]),
            (r#"x"" '' """#, &["x", "", ""]),
            ("pre'fix'\"ed\"", &["prefixed"]),
            ("a # not a comment", &["a", "#", "not", "a", "comment"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(split(text).unwrap(), *want, "{text}");
        }
        for bad in ["a 'b", "a \"b", "a\\"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_read_supervisords_environment_like_it() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (r#"A="1",B="2""#, &[("A", "1"), ("B", "2")], &[]),
            (r#"A="x, y",B='z'"#, &[("A", "x, y"), ("B", "z")], &[]),
            ("PATH=/usr/bin:/bin,HOME=/home/forge", &[("PATH", "/usr/bin:/bin"), ("HOME", "/home/forge")], &[]),
            ("A = 1 , B = 2", &[("A", "1"), ("B", "2")], &[]),
            ("A=1,", &[("A", "1")], &[]),
            ("A=hello world,B=2", &[], &[]),
            ("A=caf\u{e9}", &[("A", "caf")], &["\u{e9}"]),
            ("", &[], &[]),
        ];
        for (text, want, skipped) in cases {
            match pairs(text) {
                Ok((got, lost)) => {
                    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    assert_eq!(got, *want, "{text}");
                    assert_eq!(lost, *skipped, "{text}");
                }
                Err(e) => assert!(want.is_empty() && !text.is_empty(), "{text}: {e}"),
            }
        }
        assert!(pairs("A=\"open").is_err());
        assert!(pairs("A").is_err());
    }
}
