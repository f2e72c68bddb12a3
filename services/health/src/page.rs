//! The status page: plain server-rendered HTML, no script. Every text from outside (kids,
//! paths, actors, reasons) is escaped.

use std::fmt::Write as _;

use ikit_common::audit::AuditRecord;
use ikit_common::events::{ChangeKind, SecretChangeEvent};
use ikit_keys::manager::KeysHealth;

use crate::rules::Part;

pub(crate) struct PageData<'a> {
    pub(crate) now: i64,
    pub(crate) parts: &'a [(&'static str, Part)],
    pub(crate) keys: &'a KeysHealth,
    pub(crate) audit: Result<&'a [AuditRecord], &'a str>,
    pub(crate) events: &'a [SecretChangeEvent],
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn when(now: i64, at: i64) -> String {
    if at <= now {
        format!("due now ({} ago)", age(now - at))
    } else {
        format!("in {}", age(at - now))
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}\
table{border-collapse:collapse;margin-bottom:1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\
.healthy{color:#176f2c}.degraded{color:#9a6700}.unhealthy{color:#b42318}code{font-size:.9em}";

pub(crate) fn render(data: &PageData<'_>) -> String {
    let mut h = String::new();
    let overall = crate::rules::overall(data.parts.iter().map(|(_, p)| p));
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ikit-health: {o}</title>\
         <style>{STYLE}</style></head><body><h1>infisical-kit <span class=\"{o}\">{o}</span></h1>",
        o = overall.as_str()
    );
    h.push_str("<h2>Health</h2><table><tr><th>part</th><th>status</th><th>detail</th></tr>");
    for (name, part) in data.parts {
        let s = part.status.as_str();
        let _ = write!(
            h,
            "<tr><td>{name}</td><td class=\"{s}\">{s}</td><td>{}</td></tr>",
            escape(&part.detail)
        );
    }
    h.push_str("</table><h2>Keys</h2><table><tr><th>system</th><th>kid</th><th>age</th><th>phase</th><th>next rotation</th></tr>");
    match &data.keys.jwt {
        Some(j) => {
            let _ = write!(
                h,
                "<tr><td>JWT {alg} (signing)</td><td><code>{kid}</code></td><td>{age}</td><td>{phase}</td><td>{next}</td></tr>",
                alg = escape(&j.algorithm),
                kid = escape(&j.current_kid),
                age = age(j.current_age_seconds),
                phase = escape(&j.phase),
                next = when(data.now, j.next_step_at),
            );
            for kid in j.published_kids.iter().filter(|k| **k != j.current_kid) {
                let _ = write!(
                    h,
                    "<tr><td>JWT (published)</td><td><code>{}</code></td><td></td><td></td><td></td></tr>",
                    escape(kid)
                );
            }
        }
        None => h.push_str("<tr><td>JWT</td><td colspan=\"4\">not loaded</td></tr>"),
    }
    match data.keys.aes.as_ref().and_then(|a| a.active_kid.as_ref().map(|k| (a, k))) {
        Some((a, kid)) => {
            let _ = write!(
                h,
                "<tr><td>AES (active)</td><td><code>{kid}</code></td><td>{age}</td><td>{pending}</td><td>{next}</td></tr>",
                kid = escape(kid),
                age = age(a.active_age_seconds.unwrap_or(0)),
                pending = match &a.pending_kid {
                    Some(p) => format!("pending <code>{}</code>", escape(p)),
                    None => format!("{} decrypt-only", a.decrypt_only),
                },
                next = when(data.now, a.next_step_at),
            );
        }
        None => h.push_str("<tr><td>AES</td><td colspan=\"4\">not loaded</td></tr>"),
    }
    h.push_str("</table><h2>Last audit entries</h2>");
    match data.audit {
        Ok([]) => h.push_str("<p>none yet</p>"),
        Ok(records) => {
            h.push_str("<table><tr><th>#</th><th>age</th><th>actor</th><th>action</th><th>target</th><th>outcome</th></tr>");
            for r in records {
                let e = &r.event;
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    r.seq,
                    age((data.now * 1000 - e.time_ms).max(0) / 1000),
                    escape(&e.actor),
                    escape(&e.action),
                    escape(&e.target),
                    e.outcome.as_str(),
                );
            }
            h.push_str("</table>");
        }
        Err(e) => {
            let _ = write!(h, "<p>the audit log cannot be read: {}</p>", escape(e));
        }
    }
    h.push_str("<h2>Last change events</h2>");
    if data.events.is_empty() {
        h.push_str("<p>none yet</p>");
    } else {
        h.push_str(
            "<table><tr><th>environment</th><th>path</th><th>change</th><th>version</th></tr>",
        );
        for e in data.events {
            let kind = match e.kind {
                ChangeKind::Created => "created",
                ChangeKind::Updated => "updated",
                ChangeKind::Deleted => "deleted",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{kind}</td><td>{}</td></tr>",
                escape(&e.environment),
                escape(&e.path()),
                e.version.map(|v| v.to_string()).unwrap_or_default(),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p><a href=\"/api/v1/infisical/health\">health JSON</a> · <a href=\"/.well-known/jwks.json\">JWKS</a> · <a href=\"/metrics\">metrics</a></p></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped() {
        assert_eq!(escape("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
        assert_eq!(age(59), "59s");
        assert_eq!(age(3 * 86_400), "3d");
        assert_eq!(when(100, 40), "due now (60s ago)");
    }
}
