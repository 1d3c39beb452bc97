//! Frames: a u32 big-endian body length, then a bincode body of at most `MAX_FRAME` bytes.
//!
//! Sans-IO: callers read bytes however they like and hand them here. The length is
//! checked before anything is allocated for the body.

use std::cell::Cell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser::{Error as _, SerializeSeq, Serializer};

use crate::row::Row;

/// The largest body a frame may carry.
pub const MAX_FRAME: usize = 1 << 20;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian()
}

/// Decoding also caps what a length inside the body may make it allocate.
fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_limit::<MAX_FRAME>()
}

/// Encodes one message as a whole frame, header included.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_onto(msg, &mut out)?;
    Ok(out)
}

/// Encodes one message as a whole frame at the end of `out`; on an error `out` is as it was.
pub fn encode_onto<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let encoded = bincode::serde::encode_into_writer(msg, Appender(out), config());
    let body_len = out.len() - start - HEADER_LEN;
    if let Err(e) = encoded {
        out.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    if body_len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLarge(body_len));
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(())
}

/// `Response::List` of `rows` as a whole frame at the end of `out`: the bytes `encode`
/// makes of `Response::List` of the same rows owned, with no row copied on the way.
pub fn encode_list<'a>(rows: impl ExactSizeIterator<Item = Row<'a>>, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_onto(&ListOf(Cell::new(Some(rows))), out)
}

/// The place of `List` among `Response`'s variants, which is its number on the wire.
const LIST_VARIANT: u32 = 1;

/// `Response::List` of rows taken from an iterator as they are encoded.
struct ListOf<I>(Cell<Option<I>>);

impl<'a, I: ExactSizeIterator<Item = Row<'a>>> Serialize for ListOf<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_variant("Response", LIST_VARIANT, "List", &SeqOf(Cell::new(self.0.take())))
    }
}

struct SeqOf<I>(Cell<Option<I>>);

impl<'a, I: ExactSizeIterator<Item = Row<'a>>> Serialize for SeqOf<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows = self.0.take().ok_or_else(|| S::Error::custom("the rows were taken already"))?;
        let mut seq = serializer.serialize_seq(Some(rows.len()))?;
        for row in rows {
            seq.serialize_element(&row)?;
        }
        seq.end()
    }
}

/// bincode's writer onto a `Vec`: one extend per piece, where its `std::io::Write` adapter
/// goes through `write_all` for every number.
struct Appender<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for Appender<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// The body length a header announces, refused when over the limit.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// How many more bytes the frame at the start of `buf` needs: 0 when it is whole, `None`
/// while its header is not (a reader then reads what comes).
pub fn missing(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    Ok(Some((HEADER_LEN + body_len(*header)?).saturating_sub(buf.len())))
}

/// Decodes a whole body; trailing bytes make it malformed.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, used) =
        bincode::serde::decode_from_slice(body, decode_config()).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!("{} trailing bytes after the message", body.len() - used)));
    }
    Ok(msg)
}

/// Decodes the first frame of `buf`: the message and the bytes it used, or `None`
/// when `buf` does not hold a whole frame yet.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*header)?;
    let Some(body) = buf[HEADER_LEN..].get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;
    use crate::response::{ErrorKind, Response, WireError};
    use crate::target::Target;

    #[test]
    fn missing_counts_what_the_first_frame_still_needs() {
        let cases: [(&[u8], Option<usize>); 5] = [
            (&[], None),
            (&[0, 0, 0], None),
            (&[0, 0, 0, 3], Some(3)),
            (&[0, 0, 0, 3, 1, 2], Some(1)),
            (&[0, 0, 0, 1, 9, 0, 0], Some(0)),
        ];
        for (buf, want) in cases {
            assert_eq!(missing(buf), Ok(want), "{buf:?}");
        }
        assert!(matches!(missing(&u32::MAX.to_be_bytes()), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn round_trips_requests_and_responses() {
        let requests = [
            Request::Hello { version: 7 },
            Request::List { target: "web:2".parse().unwrap() },
            Request::Signal { target: Target::Name("é-b".into()), signal: crate::Signal::HUP },
        ];
        for req in requests {
            let bytes = encode(&req).unwrap();
            let (back, used) = decode::<Request>(&bytes).unwrap().unwrap();
            assert_eq!(back, req);
            assert_eq!(used, bytes.len());
        }
        let resp = Response::Error(WireError::new(ErrorKind::NotFound, "no process named `x`"));
        let bytes = encode(&resp).unwrap();
        assert_eq!(decode::<Response>(&bytes).unwrap().unwrap().0, resp);
    }

    /// A row with every field at its default.
    fn stopped_row(name: &str) -> crate::response::InstanceInfo {
        crate::response::InstanceInfo {
            id: crate::target::InstanceId::new(name, 0),
            pid: None,
            state: crate::response::State::Stopped,
            uptime_secs: None,
            restarts: 0,
            last_exit: None,
            health: None,
            status: None,
            cpu_tenths: None,
            memory_bytes: None,
            start_error: None,
            recycles: 0,
            messages: 0,
            autoscale: None,
        }
    }

    #[test]
    fn a_list_of_borrowed_rows_is_the_bytes_of_the_list_owned() {
        use crate::response::{Health, InstanceInfo, State};
        use crate::signal::{Exit, Signal};
        use crate::target::InstanceId;
        let bare = stopped_row("web");
        // Every field away from its default once, and all at once with large numbers.
        let rows = [
            bare.clone(),
            InstanceInfo { id: InstanceId::new("é-b", 70_000), ..bare.clone() },
            InstanceInfo { pid: Some(4_000_000), state: State::Running, uptime_secs: Some(1 << 40), ..bare.clone() },
            InstanceInfo { restarts: 300, last_exit: Some(Exit::Code(-2)), ..bare.clone() },
            InstanceInfo { last_exit: Some(Exit::Signal(Signal::KILL)), health: Some(Health::Failing), ..bare.clone() },
            InstanceInfo { status: Some("warming up".into()), cpu_tenths: Some(1234), ..bare.clone() },
            InstanceInfo { memory_bytes: Some(u64::MAX), start_error: Some("not found".into()), ..bare.clone() },
            InstanceInfo { recycles: 9, messages: 1 << 33, autoscale: Some(false), ..bare.clone() },
            InstanceInfo {
                id: InstanceId::new("worker", u32::MAX),
                pid: Some(1),
                state: State::Backoff,
                uptime_secs: Some(u64::MAX),
                restarts: u32::MAX,
                last_exit: Some(Exit::Code(i32::MIN)),
                health: Some(Health::Ok),
                status: Some(String::new()),
                cpu_tenths: Some(u32::MAX),
                memory_bytes: Some(0),
                start_error: Some("x".repeat(300)),
                recycles: u32::MAX,
                messages: u64::MAX,
                autoscale: Some(true),
            },
        ];
        for count in [0, 1, rows.len()] {
            let owned = Response::List(rows[..count].to_vec());
            let mut out = vec![7];
            encode_list(rows[..count].iter().map(InstanceInfo::row), &mut out).unwrap();
            assert_eq!(out[1..], encode(&owned).unwrap(), "{count} rows");
            assert_eq!(out[0], 7, "what was in the buffer before stays");
            assert_eq!(decode::<Response>(&out[1..]).unwrap().unwrap().0, owned);
        }
    }

    #[test]
    fn a_list_too_large_for_a_frame_leaves_the_buffer_as_it_was() {
        use crate::response::InstanceInfo;
        let name = "x".repeat(1000);
        let row = stopped_row(&name);
        let rows = vec![row; MAX_FRAME / 1000 + 1];
        let mut out = vec![1, 2];
        assert!(matches!(encode_list(rows.iter().map(InstanceInfo::row), &mut out), Err(FrameError::TooLarge(_))));
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn a_truncated_frame_needs_more() {
        let bytes = encode(&Request::Shutdown).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode::<Request>(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let header = (u32::MAX).to_be_bytes();
        assert_eq!(decode::<Request>(&header), Err(FrameError::TooLarge(u32::MAX as usize)));
        let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(body_len(just_over), Err(FrameError::TooLarge(_))));
        assert_eq!(body_len((MAX_FRAME as u32).to_be_bytes()), Ok(MAX_FRAME));
    }

    #[test]
    fn a_message_too_large_to_encode_is_refused() {
        let req = Request::Start { target: Target::Name("x".repeat(MAX_FRAME)) };
        assert!(matches!(encode(&req), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let mut frame = 3u32.to_be_bytes().to_vec();
        frame.extend([0xff, 0xff, 0xff]);
        assert!(matches!(decode::<Request>(&frame), Err(FrameError::Malformed(_))));

        let mut bytes = encode(&Request::Shutdown).unwrap();
        bytes.push(0);
        let len = (bytes.len() - HEADER_LEN) as u32;
        bytes[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(decode::<Request>(&bytes), Err(FrameError::Malformed(_))));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever arrives, the decoder answers: a message, "need more", or an error.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(Some((_, used))) = decode::<Request>(&bytes) {
                    prop_assert!(used <= bytes.len());
                }
                let _ = decode::<Response>(&bytes);
            }

            /// A valid header in front of arbitrary bytes: same, and never more than the header says.
            #[test]
            fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
                bytes.extend(&body);
                if let Ok(Some((_, used))) = decode::<Request>(&bytes) {
                    prop_assert_eq!(used, bytes.len());
                }
            }

            #[test]
            fn requests_round_trip(name in "[A-Za-z0-9_-]{1,40}", index in any::<u32>(), n in 0u32..10_000) {
                for request in [
                    Request::Stop { target: Target::Instance(crate::InstanceId::new(name.clone(), index)) },
                    Request::Scale { name: name.clone(), count: n },
                ] {
                    let bytes = encode(&request).unwrap();
                    prop_assert_eq!(decode::<Request>(&bytes).unwrap(), Some((request, bytes.len())));
                }
            }
        }
    }
}
