//! Frames: a u32 big-endian body length, then a bincode body of at most `MAX_FRAME` bytes.
//!
//! Sans-IO: callers read bytes however they like and hand them here. The length is
//! checked before anything is allocated for the body.

use serde::Serialize;
use serde::de::DeserializeOwned;

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
    let mut out = vec![0; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut out, config()).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let body_len = out.len() - HEADER_LEN;
    if body_len > MAX_FRAME {
        return Err(FrameError::TooLarge(body_len));
    }
    out[..HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out)
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
