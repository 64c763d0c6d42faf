//! Frame decoding as the daemon and the clients see it: a byte stream split into frames, each
//! decoded as every message type. Nothing may panic, no frame may exceed the limit, and a
//! message that decodes must survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_proto::codec::{self, HEADER_LEN, MAX_FRAME_LEN};
use tokend_proto::{Hello, HelloReply, Request, Response};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(len)) = codec::complete_frame(rest) {
        assert!(len <= HEADER_LEN + MAX_FRAME_LEN);
        let payload = &rest[HEADER_LEN..len];
        if let Ok(request) = codec::decode::<Request>(payload) {
            let mut again = Vec::new();
            codec::encode(&request, &mut again).expect("a decoded request re-encodes");
            assert_eq!(codec::decode::<Request>(&again[HEADER_LEN..]).expect("and decodes again"), request);
        }
        let _ = codec::decode::<Response>(payload);
        let _ = codec::decode::<Hello>(payload);
        let _ = codec::decode::<HelloReply>(payload);
        rest = &rest[len..];
    }
});
