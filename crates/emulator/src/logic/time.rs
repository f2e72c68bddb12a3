//! Millisecond timestamps as the ISO-8601 strings the server sends (`2026-01-01T00:00:00.000Z`).

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`: the workspace's one formatter.
pub use ikit_common::datetime::iso8601_millis as iso_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_795_341_461_073), "2026-11-22T09:57:41.073Z");
        assert_eq!(iso_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
