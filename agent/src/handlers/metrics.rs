//! `procctl metrics`: the text the metrics endpoint serves, in pieces that fit a frame.

use procctl_proto::Response;

use super::{Context, Reply};

/// The most text one response carries, well under the frame cap.
const PIECE: usize = 512 * 1024;

pub async fn run(context: &Context) -> Reply {
    match context.tally.scrape(&context.sup).await {
        Ok(text) => Reply::Many(pieces(&text, PIECE)),
        Err(error) => Reply::One(Response::Error(error)),
    }
}

/// `text` cut after a newline into pieces of at most `size` bytes (a longer line is a piece
/// of its own); all but the last say there is more.
fn pieces(text: &str, size: usize) -> Vec<Response> {
    let mut out = vec![];
    let mut rest = text;
    loop {
        let bytes = rest.as_bytes();
        // Cut just after a newline, which is always a character boundary.
        let cut = if bytes.len() <= size {
            bytes.len()
        } else {
            let within = bytes[..size].iter().rposition(|&b| b == b'\n');
            let first = || bytes.iter().position(|&b| b == b'\n');
            within.or_else(first).map_or(bytes.len(), |at| at + 1)
        };
        let (piece, next) = rest.split_at(cut);
        rest = next;
        out.push(Response::Metrics { text: piece.to_string(), more: !rest.is_empty() });
        if rest.is_empty() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_at_line_ends_and_join_to_the_text() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 4, &[""]),
            ("a\n", 4, &["a\n"]),
            ("a\nb\nc\n", 4, &["a\nb\n", "c\n"]),
            ("a\nlonger\nb\n", 4, &["a\n", "longer\n", "b\n"]),
            ("ab\ncd\n", 3, &["ab\n", "cd\n"]),
        ];
        for (text, size, want) in cases {
            let got: Vec<(String, bool)> = pieces(text, *size)
                .into_iter()
                .map(|response| match response {
                    Response::Metrics { text, more } => (text, more),
                    other => panic!("{other:?}"),
                })
                .collect();
            let texts: Vec<&str> = got.iter().map(|(text, _)| text.as_str()).collect();
            assert_eq!(texts, *want, "{text:?} by {size}");
            let mores: Vec<bool> = got.iter().map(|(_, more)| *more).collect();
            let mut expected = vec![true; want.len()];
            *expected.last_mut().unwrap() = false;
            assert_eq!(mores, expected, "{text:?} by {size}");
        }
    }
}
