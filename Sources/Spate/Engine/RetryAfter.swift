import CCurl

/// Parses `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
enum RetryAfter {
    /// Nil for a wait of zero: `0`, or a date that has passed (often a server whose clock is
    /// behind). Taken as "now", it would spend every retry within a few milliseconds; the
    /// normal backoff applies instead, as curl does.
    ///
    /// - Parameter now: the current time in seconds since the epoch (for HTTP-dates).
    static func parse(_ value: String?, now: Int64) -> Duration? {
        guard let value = value?.trimmingSpaces(), !value.isEmpty else { return nil }
        if let seconds = ContentRange.parseDecimal(value) {
            return seconds > 0 ? .seconds(min(seconds, 86_400 * 365)) : nil
        }
        // libcurl's date parser understands the three HTTP date formats.
        let when = Int64(curl_getdate(value, nil))
        guard when > 0, when > now else { return nil }
        return .seconds(when - now)
    }
}
