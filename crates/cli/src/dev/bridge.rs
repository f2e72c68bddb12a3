//! Without Redis there is no pub/sub between the webhook service and the other services of the
//! stack: this task reads the webhook service's event stream (`GET /api/v1/infisical/events`,
//! Server-Sent Events) and delivers each per-key event to the shared cache in process, which
//! drops the folder's cached listing and calls the subscribers. It resumes with `Last-Event-ID`
//! after a broken connection.

use std::time::Duration;

use ikit_client::CachedClient;
use ikit_common::SecretValue;
use ikit_common::events::SecretChangeEvent;
use tokio::sync::watch;

/// One SSE frame: its `id` and its `data` lines joined.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// Takes every complete frame (ended by a blank line) off the front of `buffer`; comments
/// (heartbeats) and fields other than `id` and `data` are skipped.
pub(crate) fn take_frames(buffer: &mut String) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut data) = (None, Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            }
        }
        if !data.is_empty() {
            frames.push(Frame { id, data: data.join("\n") });
        }
    }
    frames
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    events_url: String,
    token: SecretValue,
    cache: CachedClient,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::new();
    let mut last_id: Option<String> = None;
    loop {
        let mut request = http.get(&events_url).bearer_auth(token.expose());
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let connected = tokio::select! {
            _ = stop.changed() => return,
            r = request.send() => r,
        };
        match connected {
            Ok(mut response) if response.status().is_success() => {
                let mut buffer = String::new();
                loop {
                    let chunk = tokio::select! {
                        _ = stop.changed() => return,
                        c = response.chunk() => c,
                    };
                    let Ok(Some(chunk)) = chunk else { break };
                    buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                    for frame in take_frames(&mut buffer) {
                        match serde_json::from_str::<SecretChangeEvent>(&frame.data) {
                            Ok(event) => {
                                cache.deliver(&event).await;
                            }
                            Err(_) => tracing::warn!("ignoring a malformed event from the stream"),
                        }
                        if frame.id.is_some() {
                            last_id = frame.id;
                        }
                    }
                }
            }
            Ok(response) => {
                tracing::warn!(status = response.status().as_u16(), "event stream refused");
            }
            Err(_) => tracing::debug!("event stream not reachable yet"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_blank_lines_and_heartbeats_skipped() {
        let mut buffer =
            String::from(": heartbeat\n\nid: 7\ndata: {\"a\":1}\n\nid: 8\ndata: {\"b\"");
        let frames = take_frames(&mut buffer);
        assert_eq!(frames, [Frame { id: Some("7".into()), data: "{\"a\":1}".into() }]);
        assert_eq!(buffer, "id: 8\ndata: {\"b\"", "the partial frame waits for more");
        buffer.push_str(":2}\n\n");
        assert_eq!(take_frames(&mut buffer)[0].data, "{\"b\":2}");
        assert!(buffer.is_empty());
    }
}
