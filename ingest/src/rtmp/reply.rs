//! Answers to the commands `rml_rtmp`'s `ServerSession` does not handle (`releaseStream`,
//! `FCPublish`, `FCUnpublish`), serialized by hand as complete RTMP chunks.
//!
//! The session's chunk serializer is private, and the RTMP chunk header compression means that
//! no other bytes may be interleaved on a chunk stream it uses: a second serializer on the same
//! chunk stream ID (AMF0 commands use csid 6 there) would leave the peer with a "previous
//! header" the session's serializer does not know about, and its next compressed header would
//! be misread. So these replies go on a chunk stream the session never uses ([`CSID`]) and
//! always with a full (type 0) header, which depends on no previous state; they are kept
//! within 128 bytes so each is one chunk whatever chunk size the peer believes in (the
//! session announces 4096 before anything else). Written between two whole session packets,
//! they cannot disturb the session's chunk streams or the peer's view of them.

use rml_amf0::Amf0Value;
use std::collections::HashMap;

/// The chunk stream ID of these replies. `rml_rtmp` 0.8 uses 2 (protocol control), 3 (AMF0
/// data), 4 (video), 5 (audio) and 6 (everything else, AMF0 commands included).
pub const CSID: u8 = 8;
/// Largest reply payload: the protocol's default chunk size.
pub const MAX_PAYLOAD: usize = 128;
const AMF0_COMMAND: u8 = 20;

/// An AMF0 command message as one type-0 chunk on [`CSID`]. `None` if it would not fit one
/// default-sized chunk (never for the replies below).
pub fn command(message_stream_id: u32, values: &[Amf0Value]) -> Option<Vec<u8>> {
    let payload = rml_amf0::serialize(&values.to_vec()).ok()?;
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let len = payload.len() as u32;
    let mut chunk = Vec::with_capacity(12 + payload.len());
    chunk.push(CSID); // fmt 0, one-byte basic header
    chunk.extend_from_slice(&[0, 0, 0]); // timestamp
    chunk.extend_from_slice(&len.to_be_bytes()[1..]);
    chunk.push(AMF0_COMMAND);
    chunk.extend_from_slice(&message_stream_id.to_le_bytes());
    chunk.extend_from_slice(&payload);
    Some(chunk)
}

/// `_result(transaction_id, null, undefined)`: the answer to `releaseStream`, `FCPublish`
/// and `FCUnpublish` that FMS, nginx-rtmp and SRS give.
pub fn result(transaction_id: f64) -> Option<Vec<u8>> {
    command(
        0,
        &[
            Amf0Value::Utf8String("_result".into()),
            Amf0Value::Number(transaction_id),
            Amf0Value::Null,
            Amf0Value::Undefined,
        ],
    )
}

/// `onFCPublish` / `onFCUnpublish` notifications (`name`) with a status object.
pub fn notification(name: &str, code: &str, description: &str) -> Option<Vec<u8>> {
    let mut status = HashMap::new();
    status.insert("level".to_owned(), Amf0Value::Utf8String("status".into()));
    status.insert("code".to_owned(), Amf0Value::Utf8String(code.into()));
    status.insert(
        "description".to_owned(),
        Amf0Value::Utf8String(description.into()),
    );
    command(
        0,
        &[
            Amf0Value::Utf8String(name.into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Object(status),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType, ServerSession, ServerSessionConfig, ServerSessionEvent,
        ServerSessionResult,
    };

    fn server_bytes(results: Vec<ServerSessionResult>) -> Vec<u8> {
        results
            .into_iter()
            .filter_map(|r| match r {
                ServerSessionResult::OutboundResponse(p) => Some(p.bytes),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn client_bytes(results: Vec<ClientSessionResult>) -> Vec<u8> {
        results
            .into_iter()
            .filter_map(|r| match r {
                ClientSessionResult::OutboundResponse(p) => Some(p.bytes),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn client_events(results: &[ClientSessionResult]) -> Vec<&ClientSessionEvent> {
        results
            .iter()
            .filter_map(|r| match r {
                ClientSessionResult::RaisedEvent(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn request_id(results: &[ServerSessionResult]) -> u32 {
        results
            .iter()
            .find_map(|r| match r {
                ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                    request_id,
                    ..
                })
                | ServerSessionResult::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    ..
                }) => Some(*request_id),
                _ => None,
            })
            .expect("a request")
    }

    #[test]
    fn replies_are_small_single_chunks() {
        let r = result(4.0).expect("fits");
        assert_eq!(r[0], CSID);
        assert_eq!(usize::from(r[6]) + 12, r.len());
        assert_eq!(r[7], AMF0_COMMAND);
        let n = notification("onFCPublish", "NetStream.Publish.Start", "FCPublish").expect("fits");
        assert!(n.len() <= 12 + MAX_PAYLOAD);
        let long = "x".repeat(200);
        assert!(notification("onFCPublish", "c", &long).is_none());
    }

    /// A real client session (rml_rtmp's) reads the replies interleaved with the server
    /// session's own packets and keeps decoding the server's compressed headers correctly.
    #[test]
    fn replies_interleaved_with_session_packets_keep_the_peer_in_sync() {
        let (mut server, initial) = ServerSession::new(ServerSessionConfig::new()).expect("server");
        let (mut client, client_initial) =
            ClientSession::new(ClientSessionConfig::new()).expect("client");
        let mut to_client = server_bytes(initial);
        let mut to_server = client_bytes(client_initial);

        let connect = client
            .request_connection("demo".into())
            .expect("connect request");
        to_server.extend(client_bytes(vec![connect]));
        let results = server.handle_input(&to_server).expect("server input");
        let id = request_id(&results);
        to_client.extend(server_bytes(results));
        to_client.extend(server_bytes(server.accept_request(id).expect("accept")));
        // Our replies between the session's packets, as the connection writes them.
        to_client.extend(result(98.0).expect("fits"));
        to_client
            .extend(notification("onFCPublish", "NetStream.Publish.Start", "x").expect("fits"));
        let results = client.handle_input(&to_client).expect("client input");
        assert!(client_events(&results)
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));

        // The publish request, its acceptance and one more reply.
        let publish = client
            .request_publishing("key".into(), PublishRequestType::Live)
            .expect("publish request");
        let mut to_server = client_bytes(vec![publish]);
        let mut to_client = Vec::new();
        // createStream's answer comes first, then the client sends publish.
        loop {
            let results = server.handle_input(&to_server).expect("server input");
            to_server.clear();
            let publish_id = results.iter().find_map(|r| match r {
                ServerSessionResult::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    ..
                }) => Some(*request_id),
                _ => None,
            });
            to_client.extend(server_bytes(results));
            if let Some(publish_id) = publish_id {
                to_client.extend(result(99.0).expect("fits"));
                to_client.extend(server_bytes(
                    server.accept_request(publish_id).expect("accept"),
                ));
                let results = client.handle_input(&to_client).expect("client input");
                assert!(client_events(&results)
                    .iter()
                    .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)));
                return;
            }
            let results = client.handle_input(&to_client).expect("client input");
            to_client.clear();
            to_server = client_bytes(results);
            assert!(!to_server.is_empty(), "the client must answer");
        }
    }
}
